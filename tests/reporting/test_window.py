"""One window summary: the report, the retraining trigger and `GET /drift/report` answer the same
numbers for the same logged predictions, and the numbers are right (checked against independent
computations: PSI by hand from value counts, AUC by scikit-learn, rows and labels counted here)."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from tests.support.monitoring import cache_reference, log_window

HOURS = 3.0


def hand_psi(reference: pd.Series, current: pd.Series, eps: float = 1e-4) -> float:
    """PSI of two categorical samples from their value counts: sum((c - r) * ln(c / r))."""
    r = reference.astype(str).value_counts(normalize=True)
    c = current.astype(str).value_counts(normalize=True)
    cats = r.index.union(c.index)
    r = np.maximum(r.reindex(cats, fill_value=0.0).to_numpy(), eps)
    c = np.maximum(c.reindex(cats, fill_value=0.0).to_numpy(), eps)
    return float(np.sum((c - r) * np.log(c / r)))


@pytest.fixture
def logged(tmp_path, settings_factory, contract, reference_frame):
    """An embedded store holding 400 predictions of the last hour (drifted card category, 60 %
    labelled); the reference of their run is in the local reference cache, as the API keeps it."""
    from churnops.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "predictions.db")
    log_window(store, contract, 400, seed=21, end=time.time() - 1, hours=1, drift=["category"])
    s = settings_factory(mlflow_tracking_uri="http://127.0.0.1:9", drift_cache_s=600)
    cache_reference(s, reference_frame)
    yield store, s
    store.close()


def expected_numbers(store, reference_frame) -> dict:
    """The numbers computed here from the store's own records, without the monitoring code."""
    from sklearn.metrics import roc_auc_score

    preds = pd.DataFrame(store.find_predictions())
    fb = pd.DataFrame(store.find_feedback())
    outcome = preds["request_id"].map(fb.set_index("request_id")["outcome"])
    lab = preds[outcome.notna()]
    cards = pd.Series([f["card_category"] for f in preds["features"]])
    return {
        "n": len(preds),
        "n_labelled": len(lab),
        "auc": roc_auc_score(outcome[outcome.notna()].astype(int), lab["probability"]),
        "card_psi": hand_psi(reference_frame["card_category"], cards),
    }


def through_each_entry_point(store, s, contract, now: float | None = None) -> dict:
    """(report summary, trigger decision, /drift body), each computed afresh (cache emptied before each)."""
    from churnops.monitoring.window import clear_cache
    from reporting.report import build_report
    from reporting.trigger import evaluate_window
    from serving.app import create_app

    clear_cache()
    report = build_report(store, s, contract, window_hours=HOURS, now=now, evidently=False)
    clear_cache()
    decision = evaluate_window(store, s, contract, window_hours=HOURS, now=now, dry_run=True)
    clear_cache()
    client = create_app(s, store=store, start_background=False).test_client()
    r = client.get(f"/drift/report?hours={HOURS}")
    assert r.status_code == 200, r.get_json()
    return {"report": report, "trigger": decision, "drift": r.get_json()}


def test_report_trigger_and_drift_answer_the_same_numbers(logged, contract, reference_frame):
    store, s = logged
    want = expected_numbers(store, reference_frame)
    got = through_each_entry_point(store, s, contract)
    report, trigger, drift = got["report"], got["trigger"], got["drift"]
    numbers = trigger["numbers"]

    # rows and labelled rows
    assert want["n"] == 400 and 150 < want["n_labelled"] < 400
    assert report["n_window"] == trigger["window"]["n"] == drift["n"] == want["n"]
    assert report["performance"]["n"] == numbers["n_labelled"] == drift["performance"]["n"] == want["n_labelled"]
    # realized AUC: scikit-learn on the same labelled rows
    aucs = [
        report["performance"]["overall"]["auc_roc"],
        numbers["realized_auc"],
        drift["performance"]["overall"]["auc_roc"],
    ]
    assert aucs == pytest.approx([want["auc"]] * 3, abs=1e-12)
    assert 0.6 < want["auc"] < 1.0
    # the drifted feature: PSI from value counts by hand
    psis = [
        report["drift"]["features"]["card_category"]["psi"],
        numbers["feature_psi"]["card_category"],
        drift["drift"]["features"]["card_category"]["psi"],
    ]
    assert psis == pytest.approx([want["card_psi"]] * 3, rel=1e-9)
    assert want["card_psi"] > 0.1, "the injected category drift is visible"
    # every feature, the prediction drift and the verdicts agree between the three
    assert report["drift"]["features"] == drift["drift"]["features"]
    assert numbers["feature_psi"] == {k: f["psi"] for k, f in drift["drift"]["features"].items()}
    assert report["drift"]["prediction"] == drift["drift"]["prediction"]
    assert numbers["prediction_psi"] == drift["drift"]["prediction"]["psi"] and math.isfinite(numbers["prediction_psi"])
    assert report["drift"]["max_psi"] == numbers["max_psi"] == drift["drift"]["max_psi"]
    assert report["drift"]["critical_features"] == numbers["critical_features"] == drift["verdict"]["critical_features"]
    assert report["reference_run_id"] == drift["reference_run_id"] == "ref-run"


def test_insufficient_data_is_the_same_answer_everywhere(tmp_path, settings_factory, contract, reference_frame):
    from churnops.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "few.db")
    log_window(store, contract, 50, seed=5, end=time.time() - 1, hours=1)
    s = settings_factory(mlflow_tracking_uri="http://127.0.0.1:9")
    try:
        got = through_each_entry_point(store, s, contract)
    finally:
        store.close()
    note = "not enough data (n=50 < min 200)"
    assert got["report"]["status"] == got["drift"]["status"] == "insufficient_data"
    assert got["report"]["message"] == got["trigger"]["window"]["note"] == got["drift"]["message"] == note
    assert got["trigger"]["action"] == "none" and got["trigger"]["numbers"]["max_psi"] is None


def test_one_computation_serves_report_trigger_and_drift(logged, contract, monkeypatch):
    """The report computes the window; the trigger and `/drift` right after it take it from the cache."""
    from churnops.monitoring import window as W
    from reporting.report import build_report
    from reporting.trigger import evaluate_window
    from serving.app import create_app

    calls: list[float] = []
    real = W.compute

    def counting(*args, **kwargs):
        calls.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(W, "compute", counting)
    store, s = logged
    report = build_report(store, s, contract, window_hours=HOURS, evidently=False)
    decision = evaluate_window(store, s, contract, window_hours=HOURS, dry_run=True)
    body = (
        create_app(s, store=store, start_background=False).test_client().get(f"/drift/report?hours={HOURS}").get_json()
    )
    assert calls == [HOURS], "computed once"
    assert decision["numbers"]["max_psi"] == report["drift"]["max_psi"] == body["drift"]["max_psi"]
    assert body["window"] == report["window"] == {k: decision["window"][k] for k in ("start", "end", "hours")}
    # another store object on the same file reads the same data: same entry
    from churnops.store.sqlite import SQLiteStore

    other = SQLiteStore(store.path)
    try:
        assert W.window_summary(other, s, contract, HOURS) is W.window_summary(store, s, contract, HOURS)
    finally:
        other.close()
    assert calls == [HOURS]
    # a report always computes afresh (and refreshes the entry)
    build_report(store, s, contract, window_hours=HOURS, evidently=False)
    assert calls == [HOURS, HOURS]


def test_cache_keeps_stores_apart(settings_factory, contract, reference):
    """Two in-memory stores never share an entry, even after the first is gone (ids are not reused
    while an entry names them)."""
    from churnops.monitoring.window import window_summary
    from tests.support.memory_store import MemoryStore

    s = settings_factory(drift_cache_s=600)
    now = time.time()
    a, b = MemoryStore(), MemoryStore()
    log_window(a, contract, 300, seed=1, end=now - 1, hours=1)
    first = window_summary(a, s, contract, HOURS, now, reference=reference)
    assert first["n"] == 300
    assert window_summary(b, s, contract, HOURS, now, reference=reference)["n"] == 0
    del a
    for _ in range(20):
        c = MemoryStore()
        assert window_summary(c, s, contract, HOURS, now, reference=reference)["n"] == 0
