"""The CNN, the ONNX parity gate, the sensitivity rules and the image flow end to end (MLflow server)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="the image extra is not installed (pip install -e .[image])")
pytest.importorskip("rawpy", reason="the image extra is not installed (pip install -e .[image])")

from churnops.image import train  # noqa: E402
from churnops.image.dataset import dataset_sha256, list_images, load_arrays  # noqa: E402


@pytest.fixture(scope="module")
def small(raw_folder, raw_contract):
    files = list_images(raw_folder, raw_contract)
    X, y = load_arrays(files[:120], raw_contract)
    return X, y


def test_cnn_fit_is_deterministic(small):
    from churnops.image.model import fit

    X, y = small
    a = fit(X, y, 10, width=8, lr=3e-3, epochs=1, strength=0.5, seed=3)
    b = fit(X, y, 10, width=8, lr=3e-3, epochs=1, strength=0.5, seed=3)
    c = fit(X, y, 10, width=8, lr=3e-3, epochs=1, strength=0.5, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)
    assert not all(np.array_equal(sa[k].numpy(), sc[k].numpy()) for k in sa)


def test_onnx_gate_passes_and_fails(small, raw_contract):
    from churnops.image.model import fit, predict_proba
    from churnops.pipeline import ParityError

    X, y = small
    net = fit(X, y, 10, width=8, lr=3e-3, epochs=1, strength=0.0, seed=1)
    d = train.ImageData(None, [], X, y, np.arange(0), np.arange(0), np.arange(len(y)), "", True)
    ev = {"test_proba": predict_proba(net, X)}
    onnx_bytes, diff = train.onnx_gate(net, d, ev, raw_contract, 1e-4)
    assert onnx_bytes[:2] and diff <= 1e-4
    ev_off = {"test_proba": ev["test_proba"] + np.float32(1e-3)}  # a native answer the export does not reproduce
    with pytest.raises(ParityError, match="ONNX parity 1.0.e-03 > tolerance 1e-04"):
        train.onnx_gate(net, d, ev_off, raw_contract, 1e-4)


def test_sensitivity_floors(raw_contract):
    import pandas as pd

    table = pd.DataFrame({"variation": ["baseline", "noise_3pct"], "accuracy": [0.98, 0.80]})
    train.check_sensitivity_floors(table, raw_contract.model_copy(update={"sensitivity_floor": {"noise_3pct": 0.8}}))
    with pytest.raises(train.SensitivityGateError, match="noise_3pct 0.8000 < 0.9"):
        train.check_sensitivity_floors(
            table, raw_contract.model_copy(update={"sensitivity_floor": {"noise_3pct": 0.9}})
        )
    with pytest.raises(train.SensitivityGateError, match=r"unknown variations \['noise_9pct'\]"):
        train.check_sensitivity_floors(
            table, raw_contract.model_copy(update={"sensitivity_floor": {"noise_9pct": 0.5}})
        )


@pytest.fixture
def image_env(mlflow_uri, moto_endpoint, tmp_path, monkeypatch):
    """Settings pointed at the test MLflow and moto (S3) servers, state in a temporary folder."""
    from churnops.settings import get_settings

    values = {
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "BUCKET": "image-feature-store",
        "STATE_DIR": str(tmp_path / "state"),
        "TRAIN_THREADS": "1",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    for k in ("MODEL_NAME", "EXPERIMENT_NAME", "TRAINING_DEPLOYMENT", "DATASET", "RUN_ID", "MODEL_URI"):
        monkeypatch.delenv(k, raising=False)  # the session's stack_env names the churn test model
    return get_settings()


def test_image_flow_generates_trains_registers(image_env, prefect_harness, raw_contract):
    import mlflow

    from flows.image_train_flow import image_train_flow

    out = image_train_flow(n_trials=2, limit=200, max_epochs=2)
    c = mlflow.MlflowClient(image_env.mlflow_tracking_uri)
    # the data set was generated under STATE_DIR and versioned by path + bytes
    root = image_env.state_dir / "images" / "raw_digits-seed42-first200"
    assert out["dataset_sha256"] == dataset_sha256(list_images(root, raw_contract)) and out["images"] == 200
    # ... and published in the feature store under that version, its manifest written last
    import json

    from churnops.aws import client as aws_client

    assert out["dataset_uri"] == f"s3://image-feature-store/images/raw_digits/{out['dataset_sha256']}"
    manifest = json.loads(
        aws_client("s3", image_env)
        .get_object(Bucket="image-feature-store", Key=f"images/raw_digits/{out['dataset_sha256']}/manifest.json")[
            "Body"
        ]
        .read()
    )
    assert len(manifest["files"]) == 200 and manifest["data_source"] == "synthetic-sensor"
    # every trial is a nested run of the sweep
    nested = c.search_runs(
        [c.get_experiment_by_name("raw-digits-sweep").experiment_id], f"tags.mlflow.parentRunId = '{out['run_id']}'"
    )
    assert len(nested) == 2 and all("val_accuracy" in r.data.metrics for r in nested)
    run = c.get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    assert (
        run.data.tags["data_source"] == "synthetic-sensor" and run.data.tags["dataset_sha256"] == out["dataset_sha256"]
    )
    assert run.data.tags["pkg.torch"].startswith("2.13.0")
    assert run.data.metrics["onnx_max_abs_diff"] <= 1e-4
    # the sensitivity baseline re-develops the same test frames with the same ISP: same accuracy
    assert run.data.metrics["sens_baseline_accuracy"] == pytest.approx(run.data.metrics["test_accuracy"])
    assert {r["variation"] for r in out["sensitivity"]} >= {
        "wb_gray_world",
        "demosaic_nearest",
        "noise_3pct",
        "gamma_1.8",
        "exposure_plus_1",
        "exposure_minus_1",
    }
    arts = {a.path for a in c.list_artifacts(out["run_id"])}
    assert {"isp_sensitivity.csv", "isp_sensitivity.png", "isp_sensitivity.json", "image_meta.json"} <= arts
    # the standard-images accuracies are on the run; the int8 gate's report beside the model
    assert set(out["standard_images"]) == {
        "grey_on_black",
        "black_on_white",
        "colormap",
        "jpeg_q75",
        "blur",
        "small_scale",
    }
    for style, acc in out["standard_images"].items():
        assert run.data.metrics[f"std_{style}_accuracy"] == pytest.approx(acc)
    assert "quantization.json" in arts and out["quantization"]["method"] == "static"
    assert ("model_int8.onnx" in arts) == out["quantization"]["passed"]
    # registered under the contract's model name, tagged with the data source and version
    mv = c.get_model_version("raw-digits-cnn", out["version"])
    assert mv.tags["data_source"] == "synthetic-sensor" and mv.tags["dataset_sha256"] == out["dataset_sha256"]
    # the registered ONNX model answers like the flow's evaluation on the first test images
    import onnxruntime as ort

    onnx_model = mlflow.onnx.load_model(f"models:/raw-digits-cnn/{out['version']}")
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    X, _ = load_arrays(list_images(root, raw_contract)[:4], raw_contract)
    p, emb = sess.run(None, {"image": X})
    assert p.shape == (4, 10) and np.allclose(p.sum(1), 1, atol=1e-5) and emb.shape[0] == 4


def test_image_flow_sensitivity_floor_blocks_registration(image_env, prefect_harness, raw_folder, tmp_path):
    import mlflow
    import yaml

    from churnops.contract import DATASETS_DIR
    from churnops.image.train import SensitivityGateError
    from flows.image_train_flow import image_train_flow

    spec = yaml.safe_load((DATASETS_DIR / "raw_digits.yaml").read_text())
    spec |= {"model_name": "raw-digits-floor", "sensitivity_floor": {"baseline": 1.01}}
    path = tmp_path / "floor.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SensitivityGateError, match="baseline .* < 1.01; model not registered"):
        image_train_flow(contract=str(path), n_trials=1, data=str(raw_folder), max_epochs=1)
    c = mlflow.MlflowClient(image_env.mlflow_tracking_uri)
    assert c.search_model_versions("name='raw-digits-floor'") == []
    runs = c.search_runs(
        [c.get_experiment_by_name("raw-digits-sweep").experiment_id],
        "tags.data_source = 'real'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert runs[0].info.status == "FAILED"


def test_image_flow_is_governed_like_the_tabular_tasks(image_env, prefect_harness, raw_folder, tmp_path, monkeypatch):
    """The first model is promoted; a second one is judged by churnops/rules/image_classification.yaml
    against the champion re-scored on its test split, and a failed ISP-sensitivity rule blocks it."""
    import uuid

    import yaml

    from churnops.contract import DATASETS_DIR
    from churnops.model_line import for_dataset
    from churnops.registry import alias_version, client
    from churnops.settings import get_settings
    from churnops.store.factory import open_store
    from flows.image_train_flow import image_train_flow

    name = f"raw-digits-gov-{uuid.uuid4().hex[:6]}"
    spec = yaml.safe_load((DATASETS_DIR / "raw_digits.yaml").read_text()) | {"model_name": name}
    path = tmp_path / "gov.yaml"
    path.write_text(yaml.safe_dump(spec))
    # the shipped rules, the standard-images floors at 0 (a one-epoch model is not expected to reach them)
    from churnops.governance import RULES_DIR

    shipped = yaml.safe_load((RULES_DIR / "image_classification.yaml").read_text())
    shipped["rules"]["min_standard_accuracy"] = {k: 0.0 for k in shipped["rules"]["min_standard_accuracy"]}
    (tmp_path / "first.yaml").write_text(yaml.safe_dump(shipped))
    monkeypatch.setenv("RULES_FILE", str(tmp_path / "first.yaml"))
    monkeypatch.setenv("IMAGE_N_TRIALS", "1")  # the sweep's trials from the settings (run without n_trials)
    get_settings.cache_clear()
    first = image_train_flow(contract=str(path), data=str(raw_folder), max_epochs=1, approval_timeout_s=0)
    assert first["outcome"] == "promoted" and first["champion_version"] is None and first["n_trials"] == 1
    names = {r["name"] for r in first["rules"]}
    assert {"min_test_accuracy", "min_accuracy_under.noise_1pct", "min_improvement_accuracy"} <= names
    std = next(r for r in first["rules"] if r["name"] == "min_standard_accuracy.black_on_white")
    assert std["value"] == pytest.approx(first["standard_images"]["black_on_white"])

    rules = tmp_path / "strict.yaml"
    strict = {"min_accuracy_under": {"noise_3pct": 1.01}, "min_improvement_accuracy": 0.0, "require_onnx_parity": True}
    rules.write_text(yaml.safe_dump({"task": "image_classification", "rules": strict}))
    monkeypatch.setenv("RULES_FILE", str(rules))
    # the second run trains on the version the first one published in the feature store
    second = image_train_flow(
        contract=str(path), n_trials=1, data=first["dataset_uri"], max_epochs=1, approval_timeout_s=0
    )
    assert second["dataset_sha256"] == first["dataset_sha256"] and second["dataset_uri"] == first["dataset_uri"]
    by_name = {r["name"]: r for r in second["rules"]}
    assert second["outcome"] == "blocked" and second["champion_version"] == first["version"]
    assert not by_name["min_accuracy_under.noise_3pct"]["passed"]
    noise = next(r["accuracy"] for r in second["sensitivity"] if r["variation"] == "noise_3pct")
    assert by_name["min_accuracy_under.noise_3pct"]["value"] == pytest.approx(noise)
    # the champion was re-scored on the challenger's test split (same data and seed: about the same net)
    gain = by_name["min_improvement_accuracy"]
    assert "vs champion" in gain["detail"] and abs(gain["value"]) <= 0.1 and gain["passed"] == (gain["value"] >= 0)
    s = get_settings()
    assert alias_version(name, "champion", s).version == first["version"]  # a blocked model never serves
    assert client(s).get_model_version(name, second["version"]).tags["outcome"] == "blocked"
    store = open_store(for_dataset(s, str(path)))  # the line's own store (churnops/model_line.py)
    try:
        audit = store.find_audit(limit=5)
    finally:
        store.close()
    assert [(a["action"], a["model"], str(a["to_version"])) for a in audit[:2]] == [
        ("blocked", name, second["version"]),
        ("promote", name, first["version"]),
    ]
