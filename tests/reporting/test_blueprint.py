"""`GET /drift/report` and `/drift/metrics` on the real API app (blueprint auto-registered)."""

from __future__ import annotations

import time

import pytest

from tests.reporting.conftest import MemoryStore, log_window

WINDOW: dict = {}


@pytest.fixture
def client(settings_factory, contract, reference, monkeypatch):
    from serving.app import create_app

    store = MemoryStore()
    log_window(store, contract, 400, seed=9, end=time.time() - 1, hours=1, drift=["category"])
    WINDOW["probabilities"] = [r["probability"] for r in store.find_predictions()]
    monkeypatch.setattr("reporting.reference.load_reference", lambda *a, **k: reference)
    import reporting.blueprint as bp

    bp._CACHE.clear()
    app = create_app(settings_factory(), store=store, start_background=False)
    assert "drift" in app.blueprints
    return app.test_client()


def test_drift_report_json(client, reference):
    import pandas as pd

    from reporting.drift import Thresholds, compare_feature

    r = client.get("/drift/report?hours=3")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["n"] == 400 and body["window"]["hours"] == 3.0
    card = body["drift"]["features"]["card_category"]
    assert card["status"] in ("warn", "critical") and card["test"] == "chi2" and card["p_value"] < 0.05
    assert body["drift"]["features"]["customer_age"]["test"] == "ks"
    # the endpoint compared the 400 logged probabilities with the reference's predictions (the statistic itself
    # is checked against hand computations in test_drift.py)
    expected = compare_feature(reference.prediction, pd.Series(WINDOW["probabilities"]), Thresholds())["psi"]
    assert len(WINDOW["probabilities"]) == 400
    assert body["drift"]["prediction"]["psi"] == pytest.approx(expected)
    assert body["performance"]["overall"]["n"] > 100
    assert body["verdict"]["drift"] in ("warn", "critical")
    assert client.get("/drift/report?hours=-1").status_code == 422


def test_drift_gauges_exposed(client):
    client.get("/drift/report")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'churn_feature_psi{feature="card_category"}' in text
    assert 'churn_feature_drift_status{feature="card_category"}' in text
    assert "churn_prediction_psi" in text and 'churn_realized_auc{model_version="1",route="champion"}' in text
    m = client.get("/drift/metrics")
    assert m.status_code == 200 and 'churn_feature_psi{feature="card_category"}' in m.get_data(as_text=True)


def test_insufficient_data(settings_factory, monkeypatch):
    import reporting.blueprint as bp
    from serving.app import create_app

    bp._CACHE.clear()
    app = create_app(settings_factory(), store=MemoryStore(), start_background=False)
    body = app.test_client().get("/drift/report?hours=1").get_json()
    assert body["status"] == "insufficient_data" and body["n"] == 0
