"""`GET /drift/report` and `/drift/metrics` on the real API app (blueprint auto-registered)."""

from __future__ import annotations

import time

import pytest

from tests.support.memory_store import MemoryStore
from tests.support.monitoring import cache_reference, log_window

WINDOW: dict = {}


@pytest.fixture
def client(settings_factory, contract, reference_frame):
    from serving.app import create_app

    store = MemoryStore()
    log_window(store, contract, 400, seed=9, end=time.time() - 1, hours=1, drift=["category"])
    WINDOW["probabilities"] = [r["probability"] for r in store.find_predictions()]
    s = settings_factory()
    cache_reference(s, reference_frame)
    app = create_app(s, store=store, start_background=False)
    assert "drift" in app.blueprints
    return app.test_client()


def test_drift_report_json(client, reference):
    import pandas as pd

    from churnops.monitoring.drift import Thresholds, compare_feature

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
    from serving.app import create_app

    app = create_app(settings_factory(), store=MemoryStore(), start_background=False)
    body = app.test_client().get("/drift/report?hours=1").get_json()
    assert body["status"] == "insufficient_data" and body["n"] == 0


def test_drift_cache_is_a_bounded_lru_with_ttl(client, monkeypatch):
    """One entry per distinct `hours=` value forever was a memory leak: the cache keeps at most
    CACHE_ENTRIES windows, the least recently used goes first, expired ones go on the next insert."""
    from churnops.monitoring import window as W

    computed: list[float] = []

    def fake(store, settings, contract, hours, now=None, **kwargs):
        computed.append(hours)
        return W.Window({"n": 0, "status": "insufficient_data", "window": {"hours": hours}})

    monkeypatch.setattr(W, "compute", fake)
    W.clear_cache()
    for i in range(1, 200):
        assert client.get(f"/drift/report?hours={i / 7}").status_code == 200
        if i % 3 == 0:  # hours=1/7 stays in use: the least recently used are evicted, not it
            client.get(f"/drift/report?hours={1 / 7}")
    from serving.drift import window_hours

    assert len(W._CACHE) == W.CACHE_ENTRIES
    assert window_hours(1 / 7) == 0.15 and 0.15 in {k.hours for k in W._CACHE}  # 8.6 min -> 9 min
    assert computed.count(0.15) == 1, "a cached window is not recomputed"
    monkeypatch.setattr(W.time, "monotonic", lambda real=W.time.monotonic: real() + 3600)
    client.get("/drift/report?hours=5")
    assert [k.hours for k in W._CACHE] == [5.0], "expired windows are dropped on the next insert"


@pytest.mark.parametrize("hours", ["nan", "inf", "1e400", "-1", "0", "2161", "abc"])
def test_drift_hours_out_of_range_is_422_naming_hours(client, hours):
    import json

    r = client.get(f"/drift/report?hours={hours}")
    assert r.status_code == 422
    assert "hours" in json.loads(r.data)["details"]
    m = client.get(f"/drift/metrics?hours={hours}")
    assert m.status_code == 422 and "hours" in m.get_data(as_text=True)


@pytest.mark.parametrize("mlflow", ["silent", "closed"])
def test_drift_report_never_waits_for_mlflow(settings_factory, contract, reference_frame, monkeypatch, mlflow):
    """Issue 13 item 16: with no cached reference and MLflow away, 503 + Retry-After at once, fetch in the background."""
    from ops.localservers import free_port
    from serving.app import create_app
    from tests.netfaults import BlackHole

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    bh = BlackHole()
    try:
        port = bh.port if mlflow == "silent" else free_port()
        store = MemoryStore()
        log_window(store, contract, 400, seed=9, end=time.time() - 1, hours=1)
        s = settings_factory(mlflow_tracking_uri=f"http://alice:s3cret@127.0.0.1:{port}")
        client = create_app(s, store=store, start_background=False).test_client()
        first = client.get("/drift/report")
        assert first.status_code == 503 and int(first.headers["Retry-After"]) >= 1, first.get_json()
        assert "being fetched" in first.get_json()["details"]["reason"]
        m = client.get("/drift/metrics")
        assert m.status_code == 503 and int(m.headers["Retry-After"]) >= 1
        deadline = time.monotonic() + 30  # the background fetch gives up (1 s timeout, no retries)
        while time.monotonic() < deadline:
            r = client.get("/drift/report")
            if "being fetched" not in r.get_json()["details"]["reason"]:
                break
            time.sleep(0.1)
        body = r.get_json()
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, body
        assert "s3cret" not in str(body) and "***@127.0.0.1" in body["details"]["reason"], body
        if mlflow == "silent":
            assert bh.accepted >= 1
        # the reference arrives in the cache (as a later fetch would leave it): served without MLflow
        cache_reference(s, reference_frame)
        ok = client.get("/drift/report")
        assert ok.status_code == 200 and ok.get_json()["reference_run_id"] == "ref-run"
    finally:
        bh.close()
