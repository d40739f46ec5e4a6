"""Monitoring a regression (issue 12): prediction drift on the predicted values, realized MAE / RMSE /
R² from /feedback values, the RMSE ceiling of the retraining trigger and the report, on a real
SQLite prediction log and the bundled diabetes data (a least-squares fit stands in for the model)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from churnops.contract import load_contract
from churnops.monitoring.drift import Reference
from churnops.monitoring.window import window_summary
from reporting.trigger import evaluate_window

C = load_contract("diabetes")  # target `progression`, tolerance 50
NOW = 1_800_000_000.0
SPLIT = 300  # rows [0, 300): the reference (training) sample; the rest: the served window


@pytest.fixture(scope="module")
def data():
    """(reference frame with `prediction`, window rows with `prediction`, the window's test RMSE)."""
    from churnops.datasets_bundled import diabetes

    raw = diabetes().rename(columns={"target": "progression"})
    X = np.column_stack([raw[C.feature_names].to_numpy(float), np.ones(len(raw))])
    coef, *_ = np.linalg.lstsq(X[:SPLIT], raw["progression"].to_numpy()[:SPLIT], rcond=None)
    raw["prediction"] = X @ coef
    ref, win = raw.iloc[:SPLIT].reset_index(drop=True), raw.iloc[SPLIT:].reset_index(drop=True)
    test_rmse = float(np.sqrt(np.mean((win["prediction"] - win["progression"]) ** 2)))
    return ref, win, test_rmse


@pytest.fixture
def reference(data):
    ref, _, test_rmse = data
    r = Reference.from_frame(ref, C, run_id="reg-run")
    r.test_metrics = {"mae": 1.0, "rmse": test_rmse, "r2": 0.5}  # as evaluation.json records them
    return r


@pytest.fixture
def store(tmp_path):
    from churnops.store.sqlite import SQLiteStore

    s = SQLiteStore(tmp_path / "predictions.db")
    yield s
    s.close()


@pytest.fixture
def settings(tmp_path):
    from churnops.settings import Settings

    def make(**kw):
        base = dict(
            _env_file=None,
            dataset="diabetes",
            state_dir=tmp_path / "state",
            reports_dir=tmp_path / "reports",
            report_min_rows=50,
            report_max_rows=2000,
        )
        return Settings(**(base | kw))

    return make


@pytest.fixture(autouse=True)
def _fresh_window_cache():
    from churnops.monitoring.window import clear_cache

    clear_cache()
    yield
    clear_cache()


def log(store, win: pd.DataFrame, shift: float = 0.0, value_error: float = 0.0, labelled: int | None = None):
    """Log the window's predictions as the server does for a regression (`prediction`, no
    probability/decision), `shift` added to every predicted value, and feedback values (observed
    progression + `value_error`) for the first `labelled` rows."""
    n = len(win)
    ts = NOW - 3600 + np.arange(n) * (3000.0 / n)
    store.insert_predictions(
        [
            {
                "_id": f"r{i}",
                "request_id": f"r{i}",
                "ts": float(ts[i]),
                "source": "http",
                "model_run_id": "reg-run",
                "model_version": "1",
                "route": "champion",
                "features": {f: float(win.at[i, f]) for f in C.feature_names},
                "prediction": float(win.at[i, "prediction"] + shift),
                "latency_ms": 1.0,
            }
            for i in range(n)
        ]
    )
    k = n if labelled is None else labelled
    store.add_feedback_many(
        [
            {"request_id": f"r{i}", "outcome": float(win.at[i, "progression"] + value_error), "ts": float(ts[i] + 1)}
            for i in range(k)
        ]
    )


def test_window_reads_the_predicted_values_and_scores_the_feedback_values(store, settings, reference, data):
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    _, win, _ = data
    log(store, win)
    out = window_summary(store, settings(), C, 3.0, now=NOW, reference=reference)
    assert out["n"] == len(win) and out["status"] == "ok"
    pred = out["drift"]["prediction"]
    assert pred is not None and pred["status"] == "ok"  # the same model on the same population
    assert pred["mean"] == pytest.approx(win["prediction"].mean())
    perf = out["performance"]
    assert perf["task"] == "regression" and perf["n"] == len(win)
    y, p = win["progression"].to_numpy(), win["prediction"].to_numpy()
    o = perf["overall"]
    assert o["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert o["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, p)))
    assert o["r2"] == pytest.approx(r2_score(y, p))
    assert o["share_off"] == pytest.approx(np.mean(np.abs(p - y) > 50))  # the contract's tolerance
    assert o["bias"] == pytest.approx(np.mean(p - y))
    assert "auc_roc" not in o and o["training"]["rmse"] == pytest.approx(data[2])
    assert perf["by_model"][0]["model_version"] == "1" and perf["by_model"][0]["n"] == len(win)

    from churnops.monitoring.gauges import drift_exposition

    text = drift_exposition(out).decode()
    line = next(x for x in text.splitlines() if x.startswith("churn_realized_rmse{"))
    assert 'model_version="1"' in line and float(line.split()[-1]) == pytest.approx(o["rmse"])
    assert "churn_realized_auc{" not in text


def test_shifted_predicted_values_are_critical_prediction_drift(store, settings, reference, data):
    _, win, _ = data
    log(store, win, shift=120.0)
    out = window_summary(store, settings(), C, 3.0, now=NOW, reference=reference)
    pred = out["drift"]["prediction"]
    assert pred["status"] == "critical" and pred["p_value"] < 1e-6
    assert out["drift"]["n_critical"] == 0  # the features did not move
    assert out["status"] == "critical" and out["verdict"]["prediction"] == "critical"


def test_trigger_fires_when_the_feedback_values_are_far_off(store, settings, reference, data):
    _, win, test_rmse = data
    log(store, win, value_error=150.0)
    d = evaluate_window(store, settings(), C, 3.0, now=NOW, reference=reference, dry_run=True)
    assert d["action"] == "dry_run" and len(d["reasons"]) == 1, d["reasons"]
    realized = float(np.sqrt(np.mean((win["prediction"] - win["progression"] - 150.0) ** 2)))
    assert d["reasons"][0] == (
        f"realized RMSE {realized:.3f} > ceiling {1.5 * test_rmse:.3f} "
        f"(1.5 x training test RMSE {test_rmse:.3f}) on {len(win)} labelled predictions"
    )
    assert d["numbers"]["realized_rmse"] == pytest.approx(realized) and d["numbers"]["realized_auc"] is None


def test_trigger_stays_quiet_when_the_values_are_as_good_as_in_training(store, settings, reference, data):
    _, win, _ = data
    log(store, win)
    d = evaluate_window(store, settings(), C, 3.0, now=NOW, reference=reference, dry_run=True)
    assert d["reasons"] == [] and d["action"] == "none" and d["numbers"]["n_labelled"] == len(win)


def test_too_few_far_off_labels_do_not_trigger(store, settings, reference, data):
    _, win, _ = data
    log(store, win, value_error=150.0, labelled=30)  # < min_labelled (50)
    d = evaluate_window(store, settings(), C, 3.0, now=NOW, reference=reference, dry_run=True)
    assert d["reasons"] == [] and d["numbers"]["n_labelled"] == 30


def test_an_absolute_rmse_ceiling_setting_wins_over_the_factor(store, settings, reference, data):
    _, win, _ = data
    log(store, win)  # the model's own error, below 1.5 x its test RMSE
    d = evaluate_window(store, settings(rmse_ceiling=10.0), C, 3.0, now=NOW, reference=reference, dry_run=True)
    assert len(d["reasons"]) == 1 and "> ceiling 10.000 (RMSE_CEILING)" in d["reasons"][0]
    with pytest.raises(ValueError, match="rmse_ceiling"):
        settings(rmse_ceiling=-1.0)


def test_report_shows_the_regression_quality_and_realized_rmse(store, settings, reference, data, tmp_path):
    from reporting.report import build_report

    _, win, _ = data
    log(store, win, value_error=150.0)
    s = settings()
    summary = build_report(store, s, C, 3.0, now=NOW, reference=reference)
    out = tmp_path / "reports"
    assert summary["headline"]["realized_rmse"] == pytest.approx(summary["performance"]["overall"]["rmse"])
    assert summary["headline"]["realized_rmse"] > 100 and summary["headline"]["realized_auc"] is None
    quality = (out / summary["files"]["quality_html"]).read_text()
    assert "R2 Score (current)" in quality  # Evidently's regression preset
    o = summary["performance"]["overall"]
    for label, key in (("RMSE", "rmse"), ("MAE", "mae"), ("R²", "r2")):
        assert f"<td>{label}</td><td>{format(o[key], '.4g')}</td>" in quality  # our realized section
    saved = json.loads((out / summary["files"]["json"]).read_text())
    assert saved["performance"]["overall"]["share_off"] == pytest.approx(1.0, abs=0.05)  # values 150 off
    assert "RMSE " + format(summary["headline"]["realized_rmse"], ".3f") in (out / "index.html").read_text()
