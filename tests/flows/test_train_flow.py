"""The training flow end to end on real servers: moto S3, MLflow server, Prefect harness."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_flow_registers_model_with_aliases_and_lineage(trained, stack_env):
    from churnops.registry import alias_version, client

    assert trained["version"] == "1"
    assert set(trained["aliases"]) == {"champion", "candidate"}  # `challenger` only for a version that passed the rules
    assert trained["test_metrics"]["auc_roc"] > 0.97
    assert trained["onnx_max_abs_diff"] <= 1e-4
    assert alias_version(stack_env.model_name, "champion", stack_env).run_id == trained["run_id"]
    run = client(stack_env).get_run(trained["run_id"])
    tags = run.data.tags
    assert tags["dataset_sha256"] == trained["dataset_sha256"] and len(tags["dataset_sha256"]) == 64
    assert tags["data_source"] == "real"
    assert tags["seed"] == "42" and len(tags["config_hash"]) == 64
    assert "pkg.xgboost" in tags and tags["git_commit"]
    children = client(stack_env).search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{trained['run_id']}'"
    )
    assert len(children) == 6
    for child in children:
        assert {"learning_rate", "max_depth", "n_trees"} <= set(child.data.params)
        assert {"val_auc_roc", "val_pr_auc", "val_log_loss", "val_f1"} <= set(child.data.metrics)


def test_logged_bundle_has_no_leakage_and_onnx_matches(trained, stack_env, tmp_path):
    import mlflow

    from churnops.bundle import Bundle

    mlflow.set_tracking_uri(stack_env.mlflow_tracking_uri)
    path = mlflow.artifacts.download_artifacts(f"runs:/{trained['run_id']}/model", dst_path=str(tmp_path))
    bundle_dir = f"{path}/artifacts/bundle"
    meta = json.loads(open(f"{bundle_dir}/meta.json").read())
    assert not any(f.lower().startswith("naive_bayes") or f == "clientnum" for f in meta["features"])
    onnx = Bundle.load(bundle_dir, prefer_onnx=True)
    native = Bundle.load(bundle_dir, prefer_onnx=False)
    assert onnx.runtime == "onnx" and native.runtime == "xgboost"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, onnx.encoder.width)).astype(np.float32) * 100
    assert np.max(np.abs(onnx.predict_matrix(X) - native.predict_matrix(X))) < 1e-4
    assert meta["threshold"] == pytest.approx(trained["threshold"])


def test_logged_pyfunc_model_loads_from_code_and_scores_like_xgboost(trained, stack_env, tmp_path):
    """The pyfunc model is logged as code (no pickle, which MLflow refuses to load by default) with an
    input example: it loads, and scores the example as XGBoost itself scores the encoded rows."""
    import mlflow
    import xgboost as xgb

    from churnops.features import FeatureEncoder

    mlflow.set_tracking_uri(stack_env.mlflow_tracking_uri)
    uri = f"runs:/{trained['run_id']}/model"
    path = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path))
    mlmodel = open(f"{path}/MLmodel").read()
    assert "python_model.pkl" not in mlmodel and "pyfunc_model.py" in mlmodel
    example = mlflow.models.Model.load(path).load_input_example(path)
    # JSON keeps no dtype: numbers written without a fraction read back as integers, and the
    # signature (the clean frame's) says double, which MLflow does not convert integers to
    example = example.astype({c: float for c in example.select_dtypes("integer").columns})
    out = mlflow.pyfunc.load_model(uri).predict(example)
    bundle_dir = f"{path}/artifacts/bundle"
    encoder = FeatureEncoder.from_json(open(f"{bundle_dir}/encoder.json").read())
    booster = xgb.Booster(model_file=f"{bundle_dir}/booster.json")
    expected = booster.predict(xgb.DMatrix(encoder.transform_frame(example)))
    assert len(out) == len(example) == 5
    assert np.allclose(out["probability"].to_numpy(), expected, atol=1e-6)
    threshold = json.loads(open(f"{bundle_dir}/meta.json").read())["threshold"]
    assert (out["churn"].to_numpy() == (expected >= threshold)).all()


def test_run_logs_held_out_probabilities_for_the_estimated_performance(trained, stack_env, tmp_path):
    """calibration_reference.csv: the test split's probabilities and labels (their AUC is the run's
    test AUC), and the monitoring reference calibrates on it (CBPE), not on the training rows."""
    from churnops.contract import load_contract
    from churnops.metrics import auc_roc
    from churnops.monitoring.reference import load_reference

    ref = load_reference(trained["run_id"], stack_env, load_contract(stack_env.dataset), cache_root=tmp_path)
    cal = ref.calibration
    assert cal is not None and cal.source == "held-out test split"
    assert set(np.unique(cal.labels)) == {0, 1} and 0 <= cal.probabilities.min() <= cal.probabilities.max() <= 1
    assert auc_roc(cal.labels, cal.probabilities) == pytest.approx(trained["test_metrics"]["auc_roc"], abs=1e-9)
