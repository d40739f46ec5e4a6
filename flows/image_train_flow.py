"""Prefect flow: the image track's sweep, from raw DNG captures to a registered ONNX CNN.

Thin over `churnops.image.train` (each step a task, so the Prefect UI shows where a run failed).
`make demo-image` runs it in this process on the generated raw digits; `DATA=<folder>` takes a
folder of DNG/PNG/JPG files in the `<class>/<file>` layout instead.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from churnops import pipeline
from churnops.cli import fail, setup_logging
from churnops.contract import load_any_contract
from churnops.image import analysis, train
from churnops.image.contract import ImageContract
from churnops.image.dataset import RAW_SUFFIXES, read_raw
from churnops.image.feature_store import fetch_images, put_images
from churnops.lineage import lineage_tags
from churnops.model_line import check_line, for_dataset
from churnops.redact import redact
from churnops.registry import alias_version, check_tracking, client
from churnops.settings import Settings, get_settings
from flows.train_flow import govern

FLOW_NAME = "train-image-model"


def image_settings(s: Settings, contract: ImageContract, dataset: str | None = None) -> Settings:
    """The settings of the image contract's model line, resolved as the tabular lines are
    (`churnops.model_line.for_dataset`): its model name, experiment, training deployment and its own
    prediction log, spool, outbox and serving state (registry helpers and the audit read them there)."""
    return for_dataset(s, dataset or contract.name, contract)


def contract_of(name: str) -> ImageContract:
    contract = load_any_contract(name)
    if not isinstance(contract, ImageContract):
        raise ValueError(f"data contract {name!r} is not an image_classification contract")
    return contract


@task(name="preflight", cache_policy=NO_CACHE, retries=0)
def preflight(s: Settings) -> None:
    """Fail fast, naming the URI, when MLflow cannot be reached."""
    check_tracking(s)


@task(name="load-images", cache_policy=NO_CACHE)
def load_images(contract: ImageContract, s: Settings, data: str | None, limit: int | None):
    parent = None
    if data and data.startswith("s3://"):  # a published version of the feature store
        root, manifest = fetch_images(data, contract, s)
        synthetic = manifest.get("data_source") == train.DATA_SOURCE_SYNTHETIC
        parent = manifest.get("parent")  # a version built from /feedback labels names its parent
    else:
        root, synthetic = train.resolve_data(contract, s, data, limit)
    d = train.prepare(root, contract, s, synthetic)
    d.parent = parent
    # every training set lands in the feature store, versioned by its SHA-256, like the tabular snapshots
    d.uri = put_images(d.files, d.sha256, contract, s, train.DATA_SOURCE_SYNTHETIC if synthetic else "real")
    get_run_logger().info(
        "%d images from %s (sha256 %s, %s)",
        len(d.files),
        d.uri,
        d.sha256[:12],
        train.DATA_SOURCE_SYNTHETIC if synthetic else "real",
    )
    return d


@task(name="sweep", cache_policy=NO_CACHE)
def sweep(d, contract, s: Settings, exp_id: str, run_id: str, timer, n_trials: int, space):
    t0 = time.perf_counter()
    trials = train.run_sweep(d, contract, s, n_trials, space, train.TrialLogger(client(s), exp_id, run_id, timer))
    best = train.best_trial(trials)
    get_run_logger().info(
        "%d trials in %.1f s; best #%d val accuracy %.4f %s",
        len(trials),
        time.perf_counter() - t0,
        best.number,
        best.metrics["accuracy"],
        best.params,
    )
    return trials, best, time.perf_counter() - t0


@task(name="refit-evaluate", cache_policy=NO_CACHE)
def refit_evaluate(d, best, contract, s: Settings):
    net = train.refit(d, best, contract, s)
    return net, train.evaluate(net, d, contract)


@task(name="isp-sensitivity", cache_policy=NO_CACHE)
def isp_sensitivity(net, d, contract: ImageContract, s: Settings, run_id: str):
    """Accuracy under ISP variations on the test set's raw files; logged; floors checked."""
    from churnops.image import model  # torch (lazy-imports)

    raw = [i for i in d.idx_test if d.files[i].path.suffix.lower() in RAW_SUFFIXES]
    frames = [read_raw(d.files[i].path, d.files[i].rel) for i in raw]
    table = analysis.sensitivity(lambda X: model.predict_proba(net, X), frames, d.y[raw], contract, s.seed)
    analysis.log_sensitivity(table, run_id, s.mlflow_tracking_uri)
    get_run_logger().info("ISP sensitivity:\n%s", table[["variation", "accuracy", "delta"]].to_string(index=False))
    train.check_sensitivity_floors(table, contract)
    return table


@task(name="standard-images", cache_policy=NO_CACHE)
def standard_images(net, d, s: Settings, run_id: str) -> dict:
    """Accuracy on PNG/JPEG renders of the test split (the rules' `min_standard_accuracy`); logged."""
    table = train.standard_images(net, d)
    train.log_standard_images(table, run_id, s.mlflow_tracking_uri)
    get_run_logger().info("standard images: %s", ", ".join(f"{k} {v:.4f}" for k, v in table.items()))
    return table


@task(name="governance-evidence", cache_policy=NO_CACHE)
def evidence(d, ev, table, s: Settings, standard: dict | None = None) -> dict:
    return train.governance_evidence(d, ev, table, s, standard)


@task(name="onnx-log-register", cache_policy=NO_CACHE)
def log_register(net, d, ev, best, trials, contract, s: Settings, run_id: str, timer):
    onnx_bytes, diff = train.onnx_gate(net, d, ev, contract, s.onnx_tolerance)
    int8, quant = train.quantize_gate(onnx_bytes, d, contract, s)
    get_run_logger().info(
        "int8 (%s): %s",
        quant.get("method"),
        "passed, pooled accuracy drop %.4f, argmax agreement %.4f" % (quant["accuracy_drop"], quant["argmax_agreement"])
        if int8 is not None
        else f"not registered ({quant.get('failure')})",
    )
    reg = train.log_and_register(
        net, onnx_bytes, diff, d, ev, best, trials, contract, s, run_id, timer, int8=int8, quantization=quant
    )
    return reg | {"onnx_max_abs_diff": diff, "quantization": quant}


@flow(name=FLOW_NAME, log_prints=True)
def image_train_flow(
    contract: str = "raw_digits",
    n_trials: int | None = None,
    data: str | None = None,
    limit: int | None = None,
    max_epochs: int | None = None,
    approval_timeout_s: float | None = None,
) -> dict:
    """Sweep, refit, analyse, check and register the image CNN. Returns the run summary.

    `n_trials`: the sweep's trials (default IMAGE_N_TRIALS); `limit` keeps the first N generated digits and
    `max_epochs` caps the epoch range (tests).
    """
    c = contract_of(contract)
    s = image_settings(get_settings(), c, contract)
    preflight(s)
    check_line(s.model_name, c.fingerprint(), s)  # MODEL_NAME of another contract: refused before the sweep
    d = load_images(c, s, data, limit)
    space = train.SweepSpace()
    if max_epochs is not None:
        space.epochs = (min(space.epochs[0], max_epochs), max_epochs)
    n_trials = n_trials or s.image_n_trials  # IMAGE_N_TRIALS (12) unless the run names its own
    config = train.training_config(c, s, n_trials, space)
    source = train.DATA_SOURCE_SYNTHETIC if d.synthetic else "real"
    tags = lineage_tags(d.sha256, config, s.seed, d.synthetic, d.uri or str(d.root)) | {
        "data_source": source,
        "dataset": c.name,
        "task": c.task,
    }
    if d.parent:
        tags["parent_dataset"] = d.parent
    tags |= {f"pkg.{k}": v for k, v in train.package_versions().items()}
    exp_id, run_id = pipeline.start_parent_run(s, tags)
    timer = pipeline.Timer()
    try:
        trials, best, sweep_s = sweep(d, c, s, exp_id, run_id, timer, n_trials, space)
        net, ev = refit_evaluate(d, best, c, s)
        table = isp_sensitivity(net, d, c, s, run_id)
        standard = standard_images(net, d, s, run_id)
        proof = evidence(d, ev, table, s, standard)
        reg = log_register(net, d, ev, best, trials, c, s, run_id, timer)
    except BaseException:
        client(s).set_terminated(run_id, status="FAILED")
        raise
    client(s).set_terminated(run_id)
    # the same governance as the tabular tasks: rules, one outcome, a person's approval (flows.train_flow)
    gate = govern(s, str(reg["version"]), reg["aliases"], proof, approval_timeout_s, task=c.task)
    return {
        "run_id": run_id,
        "model_name": s.model_name,
        "version": reg["version"],
        "aliases": reg["aliases"],
        "model_uri": reg["model_uri"],
        "test_metrics": ev["metrics"],
        "onnx_max_abs_diff": reg["onnx_max_abs_diff"],
        "n_trials": len(trials),
        "sweep_seconds": sweep_s,
        "best_params": best.params,
        "dataset_sha256": d.sha256,
        "dataset_uri": d.uri,
        "parent_dataset": d.parent,
        "data_source": source,
        "images": len(d.files),
        "sensitivity": table[["variation", "accuracy", "delta"]].to_dict("records"),
        "standard_images": standard,
        "quantization": reg["quantization"],
        "outcome": gate["outcome"],
        "rules": gate["rules"],
        "champion_version": proof.get("champion_version"),
        "approval_run": gate.get("approval_run"),
        "approval_url": gate.get("approval_url"),
    }


def main() -> None:
    """`make demo-image`: run the flow now in this process and print the outcome."""
    setup_logging()
    s = get_settings()
    try:
        out = image_train_flow(data=s.data)
    except Exception as exc:
        fail(exc, f"image training flow {FLOW_NAME}")
    m = out["test_metrics"]
    print(
        f"\nregistered {out['model_name']} v{out['version']} aliases={out['aliases']} ({out['data_source']}, "
        f"{out['images']} images, sha256 {out['dataset_sha256'][:12]})"
    )
    print(f"outcome: {out['outcome']}")
    for r in out["rules"]:
        print(f"  {'pass' if r['passed'] else 'FAIL'}  {r['name']}: {r['detail']}")
    print(f"run_id {out['run_id']}")
    print("test  " + "  ".join(f"{k}={v:.4f}" for k, v in m.items()))
    print(
        f"onnx parity max|diff|={out['onnx_max_abs_diff']:.2e}  sweep {out['sweep_seconds']:.1f} s ({out['n_trials']} trials)"
    )
    print("ISP sensitivity: " + ", ".join(f"{r['variation']} {r['accuracy']:.3f}" for r in out["sensitivity"]))
    print(f"MLflow  {s.mlflow_tracking_uri}/#/models/{out['model_name']}")


SAMPLE_IMAGE = "churnops/datasets/samples/raw_digits-7.dng"  # a bundled capture of a 7 (sensor.generate, seed 7)


def demo_done() -> None:
    """`make demo-image`'s last words: what serves where, and a request to try (DATASET = the image contract)."""
    s = get_settings()
    c = contract_of(s.dataset)
    champ = alias_version(c.model_name, "champion", s)
    version = f"v{champ.version}" if champ else "(no champion yet)"
    print(f"  API      {s.api_url}/predict/image   (serving {c.model_name}@champion {version}, DATASET={c.name})")
    print(
        f"  try:     curl -s -H 'Content-Type: image/x-adobe-dng' --data-binary @{SAMPLE_IMAGE} {s.api_url}/predict/image"
    )
    print(
        f'  label:   curl -s -H \'Content-Type: application/json\' -d \'{{"request_id": "<id>", "outcome": "7"}}\' {s.api_url}/feedback'
    )
    print(f"  MLflow   {redact(s.mlflow_tracking_uri)}/#/models/{c.model_name}")
    print(
        f"  Prefect  {s.prefect_api_url.removesuffix('/api')}   (deployments train-image-model/image-sweep, approve-model/approval)"
    )


if __name__ == "__main__":
    main()
