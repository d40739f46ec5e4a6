"""Tabular regression through the same lifecycle (issue 12): the diabetes contract, the metrics,
the promotion rules, training through the real flow and serving the registered model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from churnops.contract import load_contract
from churnops.governance import evaluate_rules, failed, load_rules
from churnops.tasks import BinaryClassification, Regression, regression_metrics, task_for
from tests.support.env import EnvPatch
from tests.support.registry import register_copy, unique_name

MODEL = "churn-test-diabetes"  # never the session's `churn-test` model


# ---- metrics, contract, split ------------------------------------------------------------------


def test_regression_metrics_match_sklearn_and_hand_computed_values():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y = np.array([100.0, 150.0, 200.0, 250.0])
    pred = np.array([110.0, 90.0, 205.0, 320.0])
    m = regression_metrics(y, pred, tolerance=50)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred)) == pytest.approx(36.25)
    assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, pred)))
    assert m["rmse"] == pytest.approx(math.sqrt((100 + 3600 + 25 + 4900) / 4))
    assert m["r2"] == pytest.approx(r2_score(y, pred))
    assert m["share_off"] == 0.5  # |-60| and |70| are above 50; 10 and 5 are not
    assert "share_off" not in regression_metrics(y, pred)  # no tolerance: not measured


def test_diabetes_contract_is_a_regression_and_picks_the_regression_task():
    c = load_contract("diabetes")
    assert (c.task, c.tolerance, c.target.name) == ("regression", 50.0, "progression")
    task = task_for(c)
    assert isinstance(task, Regression) and task.tolerance == 50.0
    assert isinstance(task_for(load_contract("bank_churners")), BinaryClassification)
    with pytest.raises(ValueError, match="not a tabular task"):
        task_for("image_classification")


def test_a_classification_contract_without_labels_is_refused_naming_the_field(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ntarget: {source: y}\nfeatures: {a: {kind: numeric}}\n")
    with pytest.raises(ValueError, match="target: a binary_classification contract needs `positive` and `labels`"):
        load_contract(p)
    p.write_text("name: x\ntask: regression\ntolerance: -1\ntarget: {source: y}\nfeatures: {a: {kind: numeric}}\n")
    with pytest.raises(ValueError, match="tolerance: expected a positive number"):
        load_contract(p)


def test_a_non_numeric_or_out_of_range_target_is_reported_by_the_contract_check():
    from churnops.cleaning import check_raw_frame
    from churnops.datasets_bundled import diabetes

    raw = diabetes()
    raw["target"] = raw["target"].astype(object)
    raw.loc[3, "target"] = "n/a"
    raw.loc[5, "target"] = 5000.0
    clean, report = check_raw_frame(raw, load_contract("diabetes"), "diabetes.csv")
    assert not report.ok
    assert "progression: 1 row(s) without a finite numeric target" in report.failures
    assert any(f.startswith("progression: 1 value(s) above max 1000") for f in report.failures)
    assert np.isnan(clean.loc[3, "progression"]) and clean.loc[0, "progression"] == 151.0


def test_regression_split_is_random_reproducible_and_disjoint():
    y = np.arange(400, dtype=float)
    task = Regression()
    a, b = task.split(y, 0.2, 0.2, 7), task.split(y, 0.2, 0.2, 7)
    assert all(np.array_equal(x, z) for x, z in zip(a, b))
    tr, va, te = a
    assert (len(tr), len(va), len(te)) == (240, 80, 80)
    assert len(set(tr) | set(va) | set(te)) == 400
    assert not np.array_equal(task.split(y, 0.2, 0.2, 8)[2], te)


# ---- rules ---------------------------------------------------------------------------------------


def _evidence(**over) -> dict:
    ev = {
        "test_rmse": 55.0,
        "test_r2": 0.45,
        "share_off": 0.35,
        "onnx_parity_passed": True,
        "contract_passed": True,
        "comparisons": [{"on": "test split", "rows": 89, "challenger_rmse": 55.0, "champion_rmse": 58.0}],
    }
    return ev | over


def test_regression_rules_pass_a_good_challenger():
    rules = load_rules("regression")
    results = evaluate_rules(rules, _evidence())
    assert failed(results) == []
    gain = next(r for r in results if r.name == "min_improvement_rmse")
    assert gain.value == pytest.approx(3.0)  # champion RMSE minus challenger RMSE


def test_regression_rules_list_every_failure():
    rules = load_rules("regression")
    ev = _evidence(
        test_rmse=90.0,
        test_r2=0.1,
        share_off=0.8,
        onnx_parity_passed=False,
        comparisons=[{"on": "test split", "rows": 89, "challenger_rmse": 60.0, "champion_rmse": 58.0}],
    )
    bad = {r.name: r for r in failed(evaluate_rules(rules, ev))}
    assert set(bad) == {"max_test_rmse", "min_test_r2", "max_share_off", "min_improvement_rmse", "require_onnx_parity"}
    assert bad["min_improvement_rmse"].value == pytest.approx(-2.0)
    # a metric that was not measured fails its rule rather than passing silently
    missing = {r.name for r in failed(evaluate_rules(rules, _evidence(share_off=None)))}
    assert missing == {"max_share_off"}


# ---- training through the real flow -------------------------------------------------------------


@pytest.fixture(scope="module")
def diabetes_model(stack_env, prefect_harness):
    """The diabetes regression as `make init_aws train DATASET=diabetes` makes it: a snapshot of the
    bundled data (no DATA), then the real flow (3 trials), as its own registered model; yields
    (summary, settings)."""
    from churnops.settings import get_settings
    from flows.train_flow import train_flow
    from ops.provision import init_aws

    mp = EnvPatch()  # module-wide: its changes drop the cached settings too
    mp.setenv("DATASET", "diabetes")
    mp.setenv("MODEL_NAME", MODEL)
    mp.setenv("EXPERIMENT_NAME", "diabetes-test")
    try:
        s = get_settings()
        assert init_aws(s)["snapshot"].rows == 442
        yield train_flow(n_trials=3, data_profile=False), s
    finally:
        mp.undo()


def _download_bundle(s, version: str, dst):
    import mlflow

    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    root = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{MODEL}/{version}", dst_path=str(dst))
    from pathlib import Path

    return next(Path(root).rglob("meta.json")).parent


def test_flow_trains_registers_and_promotes_the_diabetes_regression(diabetes_model, tmp_path):
    """Test metrics recomputed independently: the booster's own predictions on a test split drawn
    here with scikit-learn, scored with scikit-learn's metrics."""
    import xgboost as xgb
    from sklearn.metrics import mean_absolute_error, r2_score
    from sklearn.model_selection import train_test_split

    from churnops.datasets_bundled import diabetes

    summary, s = diabetes_model
    assert (summary["task"], summary["model_name"], summary["version"]) == ("regression", MODEL, "1")
    assert summary["outcome"] == "promoted" and "champion" in summary["aliases"]
    assert summary["threshold"] is None and summary["n_trials"] == 3
    assert set(summary["test_metrics"]) == {"mae", "rmse", "r2", "share_off"}
    assert summary["onnx_max_abs_diff"] <= s.onnx_tolerance
    assert {r["name"] for r in summary["rules"]} >= {"max_test_rmse", "min_test_r2", "min_improvement_rmse"}

    folder = _download_bundle(s, "1", tmp_path)
    booster = xgb.Booster()
    booster.load_model(str(folder / "booster.json"))
    assert booster.save_config().count('"reg:squarederror"') >= 1
    raw = diabetes()
    _, test = train_test_split(np.arange(len(raw)), test_size=s.test_size, random_state=s.seed)
    X = raw.drop(columns="target").to_numpy(dtype=np.float32)[np.sort(test)]  # contract order = CSV order
    y = raw["target"].to_numpy()[np.sort(test)]
    pred = booster.inplace_predict(X)
    m = summary["test_metrics"]
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-5)
    assert m["r2"] == pytest.approx(r2_score(y, pred), rel=1e-5)
    assert m["share_off"] == pytest.approx(np.mean(np.abs(pred - y) > 50))
    assert 0.0 < m["r2"] < 1.0  # a real fit, not a constant


def test_pyfunc_answers_predicted_values(diabetes_model):
    import mlflow
    import pandas as pd

    summary, s = diabetes_model
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
    ex = load_contract("diabetes").example
    out = model.predict(pd.DataFrame([ex, {**ex, "bmi": 40.0}]).astype(float))  # the signature: doubles
    assert list(out.columns) == ["prediction"] and np.isfinite(out["prediction"]).all()


def test_a_second_run_is_judged_against_the_champion_rescored_in_rmse(diabetes_model, monkeypatch):
    """Same snapshot, same seed: the challenger is the champion's twin, so the champion re-scored on
    the challenger's test split has the RMSE version 1 reported and the improvement is zero (passes
    `min_improvement_rmse: 0.0`); the challenger then awaits a person (APPROVAL_TIMEOUT_S=0). On a
    model of its own: version 1 of the module's model copied as champion."""
    from churnops.registry import alias_version
    from churnops.settings import get_settings
    from flows.train_flow import train_flow

    first, s = diabetes_model
    name = unique_name(MODEL)
    register_copy(s, MODEL, first["version"], name)
    for k, v in {"DATASET": "diabetes", "MODEL_NAME": name, "EXPERIMENT_NAME": "diabetes-test"}.items():
        monkeypatch.setenv(k, v)
    second = train_flow(n_trials=3, data_profile=False)
    assert second["version"] == "2" and second["champion_version"] == "1"
    assert second["outcome"] == "awaiting approval", second["rules"]
    gain = next(r for r in second["rules"] if r["name"] == "min_improvement_rmse")
    assert gain["passed"] and gain["value"] == pytest.approx(0.0, abs=1e-3)
    assert f"vs champion {first['test_metrics']['rmse']:.4f}" in gain["detail"]
    assert alias_version(name, "champion", get_settings()).version == "1"


# ---- serving the registered regression model ---------------------------------------------------


@pytest.fixture
def regression_app(diabetes_model, tmp_path, monkeypatch):
    """(client, app state, bundle folder): the app validating with the diabetes contract and serving
    version 1 of the trained regression from its downloaded bundle (ONNX runtime), SQLite log in tmp."""
    from churnops.settings import Settings
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager, ModelSet, load_model

    _, s = diabetes_model
    folder = _download_bundle(s, "1", tmp_path / "model")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    settings = Settings(
        _env_file=None,
        dataset="diabetes",
        model_name=MODEL,
        state_dir=tmp_path / "state",
        log_flush_interval_s=0.05,
        mlflow_tracking_uri="http://127.0.0.1:9",
    )
    store = SQLiteStore(settings.state_dir / "predictions.db")
    mm = ModelManager(settings)
    mm.current = ModelSet(load_model(str(folder), "champion", settings), None, 0.0)
    app = create_app(settings, store=store, models=mm, start_background=False)
    state = app.extensions["churn"]
    state.plog.start()
    yield app.test_client(), state, folder
    state.plog.close()
    store.close()


def _post(client, path, body):
    import json

    return client.post(path, data=json.dumps(body), content_type="application/json")


def test_served_regression_answers_the_boosters_own_value_and_logs_it(regression_app):
    import xgboost as xgb

    client, state, folder = regression_app
    contract = load_contract("diabetes")
    rows = [contract.example, {**contract.example, "bmi": 22.0, "s5": 4.1}]
    booster = xgb.Booster()
    booster.load_model(str(folder / "booster.json"))
    expected = booster.inplace_predict(np.array([[r[f] for f in contract.feature_names] for r in rows], np.float32))
    assert expected[0] != pytest.approx(expected[1])  # the two rows tell the models apart

    r = _post(client, "/predict", {"request_id": "d-1", "features": rows[0]})
    assert r.status_code == 200, r.json
    assert r.json["prediction"] == pytest.approx(float(expected[0]), rel=1e-5)
    assert r.json["model_version"] is None  # served from a local folder, not the registry
    assert not {"probability", "decision", "churn", "threshold"} & set(r.json)

    rb = _post(client, "/predict/batch", [{"request_id": "d-2", **rows[0]}, {"request_id": "d-3", **rows[1]}])
    assert rb.status_code == 200, rb.json
    got = {p["request_id"]: p["prediction"] for p in rb.json["predictions"]}
    assert got["d-2"] == pytest.approx(float(expected[0]), rel=1e-5)
    assert got["d-3"] == pytest.approx(float(expected[1]), rel=1e-5)

    deadline = __import__("time").monotonic() + 5
    while state.store.count_predictions() < 3 and __import__("time").monotonic() < deadline:
        state.plog.flush()
    recs = {x["request_id"]: x for x in state.store.find_predictions()}
    assert set(recs) == {"d-1", "d-2", "d-3"}
    assert recs["d-1"]["prediction"] == pytest.approx(r.json["prediction"]) and "probability" not in recs["d-1"]
    assert recs["d-3"]["prediction"] == pytest.approx(float(expected[1]), rel=1e-5)


def test_regression_feedback_takes_a_finite_value_and_refuses_anything_else(regression_app):
    client, state, _ = regression_app
    ok = _post(client, "/feedback", {"request_id": "v1", "value": 151.5})
    assert ok.status_code == 202 and ok.json["value"] == 151.5
    assert _post(client, "/feedback", {"request_id": "v2", "outcome": 90}).status_code == 202
    for body, field, words in (
        ({"request_id": "v3", "value": "high"}, "value", "expected a finite number"),
        ({"request_id": "v3", "value": True}, "value", "expected a finite number"),
        ({"request_id": "v3"}, "value", "got null"),
        ({"request_id": "v3", "outcome": [1]}, "outcome", "got an array"),
        ({"request_id": "v3", "value": 1e6}, "value", "outside the target's range"),
    ):
        r = _post(client, "/feedback", body)
        assert r.status_code == 422, (body, r.json)
        assert words in r.json["details"][field], r.json
    r = client.post("/feedback", data=b'{"request_id": "v3", "value": NaN}', content_type="application/json")
    assert r.status_code in (400, 422) and r.status_code != 500
    state.plog.flush()
    fb = {f["request_id"]: f["outcome"] for f in state.store.find_feedback()}
    assert fb == {"v1": 151.5, "v2": 90}  # nothing refused was kept; the accepted values as sent


# ---- metrics and the API description of a served regression ------------------------------------


def _samples(client) -> dict[str, float]:
    """`name{labels}` -> value of the /metrics exposition."""
    out = {}
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_regression_predictions_have_their_own_value_histogram_and_decision_label(regression_app):
    client, _, _ = regression_app
    before = _samples(client)
    r = _post(client, "/predict", {"request_id": "m-1", "features": load_contract("diabetes").example})
    assert r.status_code == 200, r.json
    after = _samples(client)

    def delta(key):
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta('churn_predicted_value_count{route="champion"}') == 1
    assert delta('churn_predicted_value_sum{route="champion"}') == pytest.approx(r.json["prediction"], rel=1e-6)
    assert delta('churn_prediction_probability_count{route="champion"}') == 0  # not a probability
    counted = [k for k in after if k.startswith("churn_predictions_total{") and delta(k) == 1]
    assert counted == ['churn_predictions_total{decision="none",model_version="None",route="champion",source="http"}']
    assert not any('decision="None"' in k for k in after)


def test_openapi_documents_the_regression_answer_and_feedback_value(regression_app):
    client, _, _ = regression_app
    spec = client.get("/openapi.json").json
    answer = spec["components"]["schemas"]["Prediction"]["properties"]
    assert answer["prediction"]["type"] == "number"
    assert not {"probability", "churn", "decision", "threshold"} & set(answer)
    body = spec["paths"]["/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"request_id", "value", "model"}  # model: a /v2 model's line (serving/oip.py)
    assert body["properties"]["value"] | {"description": ""} == {
        "type": "number",
        "minimum": 0.0,
        "maximum": 1000.0,  # the diabetes contract's target range
        "description": "",
    }
    assert "progression" in spec["info"]["description"]


def test_openapi_of_the_classifier_still_documents_probability_and_outcome():
    from serving.openapi import build_spec

    spec = build_spec(load_contract("bank_churners"))
    answer = spec["components"]["schemas"]["Prediction"]["properties"]
    assert {"probability", "churn", "decision", "threshold"} <= set(answer) and "prediction" not in answer
    body = spec["paths"]["/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["outcome"]["enum"] == [0, 1]
    assert body["properties"]["label"]["enum"] == ["Attrited Customer", "Existing Customer"]


# ---- feedback values close the loop: fresh labels and the retraining trigger --------------------


def test_feedback_values_become_a_snapshot_and_far_off_values_trigger_retraining(diabetes_model, tmp_path, monkeypatch):
    """Logged regression predictions + /feedback values in a prediction log of their own: the
    trigger, with the run's reference and test RMSE fetched from MLflow, fires on values 200 off;
    `collect-labels` (its own snapshot prefix, seeded with the bundled data) keeps them as floats."""
    from churnops.datasets_bundled import diabetes
    from churnops.feature_store import latest_snapshot, read_snapshot
    from churnops.monitoring.window import clear_cache
    from churnops.settings import get_settings
    from churnops.store.factory import open_store
    from flows.labels_flow import collect_labels_flow
    from ops.provision import init_aws
    from reporting.trigger import evaluate_window

    summary, _ = diabetes_model
    env = {
        "DATASET": "diabetes",
        "MODEL_NAME": MODEL,
        "EXPERIMENT_NAME": "diabetes-test",
        "SNAPSHOT_PREFIX": "snapshots-regression-labels",
        "PREDICTION_DB_PATH": str(tmp_path / "predictions.db"),
        "REPORT_MIN_ROWS": "50",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    clear_cache()
    try:
        s = get_settings()
        assert init_aws(s)["snapshot"].rows == 442
        raw = diabetes().iloc[:100]
        c = load_contract("diabetes")
        t0 = 1_900_000_000.0
        store = open_store(s)
        try:
            store.insert_predictions(
                [
                    {
                        "_id": f"fb-{i}",
                        "request_id": f"fb-{i}",
                        "ts": t0 + i,
                        "source": "http",
                        "model_run_id": summary["run_id"],
                        "model_version": "1",
                        "route": "champion",
                        "features": {f: float(raw.iloc[i][f]) for f in c.feature_names},
                        "prediction": float(raw.iloc[i]["target"]),
                        "latency_ms": 1.0,
                    }
                    for i in range(100)
                ]
            )
            values = [float(raw.iloc[i]["target"]) + 200.25 for i in range(100)]
            store.add_feedback_many(
                [{"request_id": f"fb-{i}", "outcome": values[i], "ts": t0 + 200 + i} for i in range(100)]
            )
            d = evaluate_window(store, s, c, 1.0, now=t0 + 400, dry_run=True)
        finally:
            store.close()
        test_rmse = summary["test_metrics"]["rmse"]
        assert d["action"] == "dry_run" and len(d["reasons"]) == 1, d
        assert d["reasons"][0] == (
            f"realized RMSE 200.250 > ceiling {1.5 * test_rmse:.3f} "
            f"(1.5 x training test RMSE {test_rmse:.3f}) on 100 labelled predictions"
        )

        out = collect_labels_flow(since=t0, until=t0 + 400)
        assert out["report"]["joined"] == 100 and out["report"]["invalid_outcomes"] == 0, out
        assert (out["rows"], out["holdout_rows"]) == (442 + 80, 20)
        snap = read_snapshot(latest_snapshot(c, s), c, s)
        assert snap["progression"].iloc[442:].tolist() == pytest.approx(values[:80])  # the observed floats
    finally:
        clear_cache()
