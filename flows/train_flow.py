"""Prefect flow: the hyperopt sweep that trains, checks and registers the churn model.

Thin over `churnops.pipeline`: each step is a task so the Prefect UI shows where a run is and
where it failed. `make train` runs it in this process (progress bar per trial); the scheduled
deployment (`flows/deployments.py`) runs the same flow on a work-pool worker.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal

from churnops import aws, pipeline
from churnops import governance as g
from churnops.approvals import remember_run, sweep_quietly
from churnops.cleaning import check_raw_frame
from churnops.cli import fail, setup_logging
from churnops.contract import ContractViolation, load_contract
from churnops.feature_store import latest_snapshot, put_snapshot, read_snapshot, snapshot_at, snapshot_metadata
from churnops.governance import load_rules
from churnops.lineage import lineage_tags
from churnops.model_line import check_line, for_dataset
from churnops.redact import redact
from churnops.registry import TrackingUnreachable, check_tracking, client
from churnops.settings import Settings, get_settings
from churnops.sources import load_raw
from churnops.tuning import best_trial
from flows.approval_flow import ApprovalInput, request_approval, ui_url  # noqa: F401 (ApprovalInput re-exported)

FLOW_NAME = "train-churn-model"


class PreflightError(RuntimeError):
    """A dependency (S3 endpoint, MLflow server, snapshot) is missing or unreachable."""


class Terminated(SystemExit):
    """SIGTERM reached `make train` outside the flow run (Prefect's own handler raises
    `TerminationSignal` inside it); exit status 143 like a shell's."""

    def __init__(self) -> None:
        super().__init__(143)


def on_sigterm(signum, frame) -> None:
    """SIGTERM ends `make train` like Ctrl-C (Prefect marks the flow run crashed) instead of leaving it behind."""
    raise Terminated()


STOPPED = (
    "training flow {flow} stopped by SIGTERM: the flow run ends crashed, its MLflow run FAILED; a version is "
    "registered only by a run that reached `onnx-log-register`"
)


@task(name="preflight", cache_policy=NO_CACHE, retries=0)
def preflight(s: Settings) -> None:
    """Fail fast, naming the endpoint, when S3 or MLflow cannot be reached."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        aws.client("s3", s, max_attempts=1).head_bucket(Bucket=s.bucket)
    except ClientError as exc:
        raise PreflightError(f"bucket s3://{s.bucket} not found at {s.aws_endpoint_url}: run `make init_aws`") from exc
    except BotoCoreError as exc:
        raise PreflightError(f"S3 endpoint {s.aws_endpoint_url} unreachable ({exc}); start it with `make up`") from exc
    try:
        check_tracking(s)
    except TrackingUnreachable as exc:
        raise PreflightError(str(exc)) from exc


@task(name="load-snapshot", cache_policy=NO_CACHE)
def load_snapshot(s: Settings, data: str | None, snapshot: str | None = None):
    """The snapshot named (s3:// URI or SHA-256), else the latest clean snapshot from S3
    (ingesting `data` first when given)."""
    from botocore.exceptions import ClientError

    contract = load_contract(s.dataset)
    if snapshot:
        snap = snapshot_at(snapshot, contract, s)
    elif data:
        raw = load_raw(s, data)
        clean, report = check_raw_frame(raw.frame, contract, subject=raw.source)
        if not report.ok:
            raise ContractViolation(report)
        snap = put_snapshot(clean, contract, raw.source, raw.synthetic, s)
    else:
        try:
            snap = latest_snapshot(contract, s)
        except ClientError as exc:
            raise PreflightError(
                f"no snapshot for dataset {contract.name} in s3://{s.bucket}/{s.snapshot_prefix}/: run `make init_aws`"
            ) from exc
    get_run_logger().info("snapshot %s rows=%d synthetic=%s", snap.uri, snap.rows, snap.synthetic)
    return snap, read_snapshot(snap, contract, s)


@task(name="load-holdout", cache_policy=NO_CACHE)
def load_holdout(s: Settings, holdout: str):
    """The held-out slice of the freshest labels (evaluation only, never trained on)."""
    contract = load_contract(s.dataset)
    return read_snapshot(snapshot_at(holdout, contract, s), contract, s)


@task(name="validate", cache_policy=NO_CACHE)
def validate(clean, s: Settings, subject: str) -> None:
    pipeline.validate_clean(clean, load_contract(s.dataset), subject)


@task(name="split", cache_policy=NO_CACHE)
def prepare(clean, s: Settings):
    return pipeline.prepare(clean, load_contract(s.dataset), s)


@task(name="sweep", cache_policy=NO_CACHE)
def sweep(prep, s: Settings, exp_id: str, parent_run_id: str, timer, n_trials: int | None, progress: bool):
    t0 = time.perf_counter()
    trials = pipeline.sweep(prep, s, exp_id, parent_run_id, timer, n_trials, progress)
    best = best_trial(trials)
    get_run_logger().info(
        "%d trials in %.1f s; best #%d val %s %.4f (%d trees)",
        len(trials),
        time.perf_counter() - t0,
        best.number,
        prep.task.headline,
        best.metrics[prep.task.headline],
        best.n_trees,
    )
    return trials, best, time.perf_counter() - t0


@task(name="refit-evaluate", cache_policy=NO_CACHE)
def refit_evaluate(prep, best, s: Settings):
    model = pipeline.refit(prep, best, s)
    return model, pipeline.evaluate(model, prep, best, s)


@task(name="onnx-log-register", cache_policy=NO_CACHE)
def log_register(model, prep, ev, best, trials, s: Settings, parent_run_id, timer, lineage, data_profile: bool):
    return pipeline.log_and_register(
        model, prep, ev, best, trials, load_contract(s.dataset), s, parent_run_id, timer, lineage, data_profile
    )


def snapshot_lineage(s: Settings, snap, holdout: str | None) -> dict[str, str]:
    """Tags naming the parent snapshot (and the held-out slice) of a snapshot built from feedback."""
    tags = {"snapshot_source": snap.source or "unknown"}
    if snap.source == "feedback":
        meta = snapshot_metadata(snap, s)
        tags |= {
            "parent_snapshot": meta.get("parent-snapshot", ""),
            "parent_sha256": meta.get("parent-sha256", ""),
            "label_policy": meta.get("policy", ""),
            "label_window_start": meta.get("window-start", ""),
            "label_window_end": meta.get("window-end", ""),
        }
    if holdout:
        tags["holdout_snapshot"] = holdout
    return tags


@task(name="governance-evidence", cache_policy=NO_CACHE)
def evidence(model, prep, ev, s: Settings, fresh=None) -> dict:
    """Challenger metrics, calibration, parity, and the champion re-scored on the same data."""
    from churnops.bundle import export_onnx, onnx_parity

    rules = load_rules(prep.task.name, path=s.rules_file)
    diff = onnx_parity(export_onnx(model, prep.encoder.width), prep.split.X_test, ev["test_proba"], prep.task)
    return pipeline.governance_evidence(
        model,
        prep,
        ev,
        load_contract(s.dataset),
        s,
        diff,
        fresh,
        measure_latency=rules.get("max_latency_ms") is not None,
    )


def approval_description(
    s: Settings, version: str, evidence: dict, results, task: str = "binary_classification"
) -> str:
    """Markdown for the approval form: both models' metrics side by side, then every rule."""
    champ = evidence.get("champion_version")
    lines = [
        f"### Promote {s.model_name} v{version} to champion?",
        "",
        f"| evaluation data | challenger v{version} | champion v{champ} |",
        "|---|---|---|",
    ]
    for c in evidence.get("comparisons", []):
        for metric in sorted(k.removeprefix("challenger_") for k in c if k.startswith("challenger_")):
            lines.append(
                f"| {metric}, {c['on']} ({c['rows']} rows) | {c[f'challenger_{metric}']:.4f} "
                f"| {c[f'champion_{metric}']:.4f} |"
            )
    for key, what in (
        ("calibration_error", "calibration error (ECE)"),
        ("test_rmse", "RMSE"),
        ("test_r2", "R²"),
        ("share_off", "share off by more than the tolerance"),
    ):
        if key in evidence:
            lines.append(f"| {what}, test split | {evidence[key]:.4f} | |")
    lines += [
        "",
        "| rule | result | detail |",
        "|---|---|---|",
    ]
    lines += [f"| {r.name} | {'pass' if r.passed else 'FAIL'} | {r.detail} |" for r in results]
    lines += shadow_lines(s, version, task)
    lines += ["", "Choose `approve` or `reject` and give a reason."]
    return "\n".join(lines)


def shadow_lines(s: Settings, version: str, task: str) -> list[str]:
    """The approval form's section of the promotion rule `shadow_paired_test` (its evidence now)."""
    try:
        rules = g.load_rules(task, path=s.rules_file)
        if not rules.get("shadow_paired_test"):
            return []
        _, ev = g.promotion_check(s, version, rules)
        return g.shadow_form_section(rules, ev.get("shadow_test"))
    except Exception as exc:  # the form is still useful without it; promote checks again
        return ["", f"shadow_paired_test: evidence unavailable ({exc})"]


def govern(
    s: Settings,
    version: str,
    aliases: list[str],
    evidence: dict,
    approval_timeout_s: float | None,
    task: str = "binary_classification",
) -> dict:
    """Give the new version its one outcome; when every rule passes, open a suspended approval run
    (its id and URL in the result) and return without waiting for the decision."""
    logger = get_run_logger()
    results = g.evaluate_rules(g.load_rules(task, path=s.rules_file), evidence)
    rules = g.results_json(results)
    champ = evidence.get("champion_version")
    out = {"outcome": None, "rules": rules, "champion_version": champ}
    if g.CHAMPION in aliases:  # the first model of this name: nothing to protect
        g.set_outcome(s, version, g.PROMOTED, results, "first registered model")
        g.record_audit(s, "promote", s.model_name, None, version, "first registered model", rules, who="train-flow")
        return out | {"outcome": g.PROMOTED}
    bad = g.failed(results)
    if bad:
        reason = "; ".join(f"{r.name}: {r.detail}" for r in bad)
        g.set_outcome(s, version, g.BLOCKED, results, reason)
        g.record_audit(s, "blocked", s.model_name, champ, version, reason, rules, who="train-flow")
        logger.warning("challenger v%s blocked by %d rule(s): %s", version, len(bad), reason)
        return out | {"outcome": g.BLOCKED, "failed_rules": [r.name for r in bad]}
    if s.auto_approve:
        try:
            g.promote(version, "AUTO_APPROVE=true and every rule passed", s, who="auto-approve", rules=rules)
            return out | {"outcome": g.PROMOTED}
        except g.PromotionRefused as exc:  # shadow_paired_test: it awaits approval (and takes shadow traffic)
            logger.warning("auto-approve of v%s refused: %s", version, exc)
    timeout = s.approval_timeout_s if approval_timeout_s is None else approval_timeout_s
    g.set_outcome(s, version, g.AWAITING, results)
    g.record_audit(s, "awaiting approval", s.model_name, champ, version, "every rule passed", rules, who="train-flow")
    if timeout <= 0:
        logger.info("challenger v%s awaits approval: `make promote VERSION=%s REASON=...`", version, version)
        return out | {"outcome": g.AWAITING}
    # no process waits for the decision: a suspended approval run holds the form (flows/approval_flow.py)
    try:
        run_id = request_approval(
            s, version, task, rules, champ, approval_description(s, version, evidence, results, task), timeout
        )
    except Exception as exc:  # no Prefect server: the decision is still `make promote`
        logger.warning(
            "could not open the approval run (%s): approve with `make promote VERSION=%s REASON=...`", exc, version
        )
        return out | {"outcome": g.AWAITING}
    try:  # the sweep finds the run by this tag when it ends without a decision (churnops/approvals.py)
        remember_run(s, version, run_id)
    except Exception as exc:
        logger.warning("could not tag v%s with its approval run %s: %s", version, run_id, exc)
    url = ui_url(s, run_id)
    logger.info("challenger v%s passed every rule: approve or reject within %.0f s at %s", version, timeout, url)
    return out | {"outcome": g.AWAITING, "approval_run": run_id, "approval_url": url}


@flow(name=FLOW_NAME, log_prints=True)
def train_flow(
    n_trials: int | None = None,
    data: str | None = None,
    progress: bool = False,
    data_profile: bool = True,
    approval_timeout_s: float | None = None,
    snapshot: str | None = None,
    holdout: str | None = None,
    dataset: str | None = None,
) -> dict:
    """Sweep, refit, check and register the model of `dataset` (default DATASET: a deployment of a
    data set passes its own). Returns the run summary."""
    s = for_dataset(get_settings(), dataset)  # the data set's line: model name, experiment, store
    contract = load_contract(s.dataset)
    preflight(s)
    check_line(s.model_name, contract.fingerprint(), s)  # MODEL_NAME of another contract: refused before the sweep
    snap, clean = load_snapshot(s, data, snapshot)
    validate(clean, s, snap.uri)
    fresh = load_holdout(s, holdout) if holdout else None
    prep = prepare(clean, s)
    config = pipeline.training_config(s, contract) | {"n_trials": n_trials or s.n_trials}
    lineage = lineage_tags(snap.sha256, config, s.seed, snap.synthetic, snap.uri) | snapshot_lineage(s, snap, holdout)
    exp_id, run_id = pipeline.start_parent_run(s, lineage | {"dataset": contract.name})
    timer = pipeline.Timer()
    try:
        trials, best, sweep_s = sweep(prep, s, exp_id, run_id, timer, n_trials, progress)
        trial_logging_s = timer.seconds  # per-trial nested runs, inside the sweep's wall time
        model, ev = refit_evaluate(prep, best, s)
        proof = evidence(model, prep, ev, s, fresh)
        out = log_register(model, prep, ev, best, trials, s, run_id, timer, lineage, data_profile)
    except BaseException:
        client(s).set_terminated(run_id, status="FAILED")
        raise
    client(s).set_terminated(run_id)
    out.sweep_seconds = sweep_s
    decision = govern(s, out.version, out.aliases, proof, approval_timeout_s, contract.task)
    if decision["outcome"] == "promoted" and "champion" not in out.aliases:
        out.aliases = [*out.aliases, "champion"]
    elif decision["outcome"] == "awaiting approval":  # every rule passed: governance.set_outcome gave it `challenger`
        out.aliases = [*out.aliases, "challenger"]
    summary = {
        "run_id": out.run_id,
        "model_name": s.model_name,
        "task": contract.task,
        "version": out.version,
        "aliases": out.aliases,
        "test_metrics": out.test_metrics,
        "threshold": out.threshold,
        "onnx_max_abs_diff": out.onnx_max_abs_diff,
        "n_trials": out.n_trials,
        "sweep_seconds": sweep_s,
        "logging_seconds": out.logging_seconds,
        "trial_logging_seconds": trial_logging_s,
        "best_params": out.best_params,
        "dataset_sha256": snap.sha256,
        "synthetic": snap.synthetic,
        "outcome": decision["outcome"],
        "rules": decision["rules"],
        "champion_version": decision["champion_version"],
        "approval_run": decision.get("approval_run"),
        "approval_url": decision.get("approval_url"),
    }
    return summary


def main() -> None:
    """`make train`: run the flow now in this process and print the outcome."""
    setup_logging()
    s = get_settings()
    signal.signal(signal.SIGTERM, on_sigterm)  # inside the flow run Prefect's handler raises TerminationSignal
    try:
        for ended in sweep_quietly(s):  # earlier challengers whose approval run was cancelled or timed out
            print(f"{ended['model']} v{ended['version']}: {ended['outcome']} ({ended['reason']})")
        summary = train_flow(progress=True, dataset=s.dataset)
    except (Terminated, TerminationSignal):
        print(f"ERROR: {STOPPED.format(flow=FLOW_NAME)}", file=sys.stderr)
        sys.exit(143)
    except Exception as exc:
        fail(exc, f"training flow {FLOW_NAME}")
    m = summary["test_metrics"]
    tag = " (SYNTHETIC data)" if summary["synthetic"] else ""
    print(f"\nregistered {summary['model_name']} v{summary['version']} aliases={summary['aliases']}{tag}")
    print(
        f"outcome: {summary['outcome']}"
        + "".join(f"\n  {'pass' if r['passed'] else 'FAIL'}  {r['name']}: {r['detail']}" for r in summary["rules"])
    )
    print(f"run_id {summary['run_id']}")
    threshold = f"  threshold={summary['threshold']:.3f}" if summary["threshold"] is not None else ""
    print("test  " + "  ".join(f"{k}={v:.4f}" for k, v in m.items()) + threshold)
    print(
        f"onnx parity max|diff|={summary['onnx_max_abs_diff']:.2e}  sweep {summary['sweep_seconds']:.1f} s "
        f"({summary['n_trials']} trials), MLflow logging {summary['logging_seconds']:.1f} s"
    )
    print(f"MLflow  {redact(s.mlflow_tracking_uri)}/#/models/{summary['model_name']}")
    if summary.get("approval_url"):
        print(
            f"approve or reject v{summary['version']} (the run waits, suspended, holding no process): {summary['approval_url']}"
        )
    logging.getLogger(__name__).debug(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
