"""The image loop closes (issue 20): trigger -> labels -> new data set version with its parent -> retrain
-> rules -> approval -> the new champion serves.

On the real test stack (moto S3, MLflow, Prefect's harness): a tiny CNN is trained on the session's
raw digits (v1, champion); an image server that keeps its uploads answers 60 fresh captures (digits
the model never saw) and receives their true classes on /feedback; the retraining trigger (its
accuracy floor set above 1 so that it fires) publishes a new immutable data set version whose
manifest names v1's as its parent, and starts the image training deployment on it (run here, in
this process, instead of by a worker); the rules (a relaxed copy of image_classification.yaml) pass,
the run leaves a suspended approval run, which is approved through Prefect's API; a server started
after that serves v2.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
import yaml

pytest.importorskip("torch", reason="the image extra is not installed (pip install -e .[image])")
pytest.importorskip("rawpy", reason="the image extra is not installed (pip install -e .[image])")

FRESH = 60  # the trigger judges realized accuracy on at least 50 labelled predictions

RELAXED = {
    "task": "image_classification",
    "rules": {
        "min_test_accuracy": 0.0,
        "min_accuracy_under": {"noise_1pct": 0.0, "exposure_minus_1": 0.0},
        "min_improvement_accuracy": -1.0,
        "require_onnx_parity": True,
        "require_contract": True,
    },
}


@pytest.fixture
def loop_env(stack_env, prefect_harness, tmp_path, monkeypatch):
    """An image contract of its own model name, its own bucket and store; uploads kept; the trigger due."""
    from churnops.contract import DATASETS_DIR
    from churnops.settings import get_settings

    name = f"raw-digits-loop-{uuid.uuid4().hex[:6]}"
    spec = yaml.safe_load((DATASETS_DIR / "raw_digits.yaml").read_text()) | {"model_name": name}
    contract = tmp_path / "loop.yaml"
    contract.write_text(yaml.safe_dump(spec))
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(RELAXED))
    monkeypatch.delenv("MODEL_NAME", raising=False)  # the contract names the model
    monkeypatch.delenv("EXPERIMENT_NAME", raising=False)
    for k, v in {
        "DATASET": str(contract),
        "BUCKET": f"loop-{uuid.uuid4().hex[:8]}",
        "STATE_DIR": str(tmp_path / "state"),
        "TRAIN_THREADS": "1",
        "IMAGE_KEEP_UPLOADS": "true",
        "IMAGE_ACCURACY_FLOOR": "1.01",
        "LABEL_MIN_ROWS": "10",
        "REPORT_MIN_ROWS": "10",
        "RULES_FILE": str(rules),
        "APPROVAL_TIMEOUT_S": "300",
        "AUTO_APPROVE": "false",
        "RETRAIN_COOLDOWN_HOURS": "1",
    }.items():
        monkeypatch.setenv(k, v)
    return get_settings(), str(contract)


def fresh_captures(root, contract):
    """Digits 300..359 of the generator (the training set holds the first 300), as DNG files."""
    from churnops.image.sensor import render, write_dng

    out = []
    for i in range(300, 300 + FRESH):
        cap = render(i, contract, seed=11)
        path = root / f"{i}.dng"
        write_dng(path, cap.raw, contract.sensor)
        out.append((path, contract.classes[cap.label]))
    return out


def test_image_trigger_labels_new_version_retrain_approve_serve(
    loop_env, raw_folder, raw_contract, tmp_path, monkeypatch
):
    import prefect.deployments
    from prefect.flow_runs import resume_flow_run

    from churnops.aws import client as aws_client
    from churnops.registry import alias_version, client
    from flows.image_train_flow import image_train_flow
    from flows.retrain_flow import retrain_trigger_flow
    from tests.support.approval import execute
    from tests.support.image import serve

    s, contract_path = loop_env
    v1 = image_train_flow(contract=contract_path, n_trials=1, data=str(raw_folder), max_epochs=1, approval_timeout_s=0)
    assert v1["outcome"] == "promoted" and v1["dataset_uri"].startswith(f"s3://{s.bucket}/images/raw_digits/")

    # an image server keeping its uploads; 40 fresh captures, then their true classes on /feedback
    app, c, store = serve(s, own_store=False)
    try:
        fresh = fresh_captures(tmp_path, raw_contract)
        for i, (path, _) in enumerate(fresh):
            r = c.post(
                "/predict/image",
                data=path.read_bytes(),
                headers={"Content-Type": "image/x-adobe-dng", "X-Request-ID": f"f{i}"},
            )
            assert r.status_code == 200 and r.json["model_version"] == v1["version"], r.json
        for i, (_, label) in enumerate(fresh):
            assert c.post("/feedback", json={"request_id": f"f{i}", "outcome": label}).status_code == 202
        app.extensions["churn"].plog.flush()
    finally:
        app.extensions["churn"].plog.close()
        store.close()

    # the trigger starts the image training deployment (run here, as a worker would, small and fast)
    started: dict = {}

    class Run:
        id = "inline"

    def run_deployment(name, timeout=None, tags=None, parameters=None):
        started.update(name=name, parameters=parameters)
        started["result"] = image_train_flow(**parameters, n_trials=1, max_epochs=1)
        return Run()

    monkeypatch.setattr(prefect.deployments, "run_deployment", run_deployment)
    decision = retrain_trigger_flow(window_hours=1)
    assert decision["action"] == "started", decision
    assert any("realized accuracy" in r for r in decision["reasons"]), decision["reasons"]
    assert started["name"] == "train-image-model/image-sweep" == decision["deployment"]
    new_uri = started["parameters"]["data"]
    assert started["parameters"]["contract"] == contract_path and new_uri != v1["dataset_uri"]

    # the new version: immutable, named by its hash, its manifest naming the parent and holding the labelled images
    bucket, _, prefix = new_uri.removeprefix("s3://").partition("/")
    manifest = json.loads(aws_client("s3", s).get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read())
    assert manifest["parent"] == v1["dataset_uri"] and manifest["parent_sha256"] == v1["dataset_sha256"]
    assert manifest["new_images"] == FRESH and len(manifest["files"]) == v1["images"] + FRESH
    assert prefix.endswith(manifest["dataset_sha256"])
    kept = {f.split("/")[1]: f.split("/")[0] for f in manifest["files"] if len(f.split("/")[1]) > 60}
    want = {hashlib.sha256(path.read_bytes()).hexdigest() + ".dng": label for path, label in fresh}
    assert kept == want  # each upload under its SHA-256, in the folder of the class its label gave

    # retrained on it, every rule passed: a suspended approval run, approved through Prefect's API
    v2 = started["result"]
    assert v2["dataset_uri"] == new_uri and v2["parent_dataset"] == v1["dataset_uri"]
    assert v2["outcome"] == "awaiting approval" and v2["approval_run"], v2
    assert all(r["passed"] for r in v2["rules"]) and {r["name"] for r in v2["rules"]} >= {"min_test_accuracy"}
    name = v1["model_name"]
    assert alias_version(name, "champion", s).version == v1["version"]
    resume_flow_run(v2["approval_run"], run_input={"decision": "approve", "reason": "fresh digits", "approver": "ia"})
    final = execute(v2["approval_run"])
    assert final.is_completed() and final.result()["outcome"] == "promoted"
    assert alias_version(name, "champion", s).version == str(v2["version"]) != v1["version"]
    tags = client(s).get_run(v2["run_id"]).data.tags
    assert tags["data_uri"] == new_uri and tags["parent_dataset"] == v1["dataset_uri"]

    # a server started now serves the new champion
    app, c, store = serve(s, own_store=False)
    try:
        path, _ = fresh[0]
        r = c.post("/predict/image", data=path.read_bytes(), headers={"Content-Type": "image/x-adobe-dng"})
        assert r.status_code == 200 and r.json["model_version"] == str(v2["version"]), r.json
    finally:
        app.extensions["churn"].plog.close()
        store.close()
