"""The prediction log seen through the HTTP API: request ids, one entry per prediction, /health."""

from __future__ import annotations

import time

from tests.support.serving import FlakyStore, example, post, wait_logged

SURROGATE_BODY = '{"request_id": "x\\ud800", "outcome": 1}'  # valid JSON, not valid Unicode


def test_feedback_checks_request_id_like_predict(app_client):
    """Item 10: /feedback rejects what /predict rejects (type, length, lone surrogate, reserved
    prefix) with a 422 naming `request_id`; the valid feedback around it is stored and the store
    stays healthy."""
    client, state = app_client
    assert post(client, "/feedback", {"request_id": "ok-1", "outcome": 1}).status_code == 202
    for bad in (
        SURROGATE_BODY,
        {"request_id": "stream:shardId-0:42", "outcome": 1},
        {"request_id": "x" * 129, "outcome": 0},
        {"request_id": ["a"], "outcome": 0},
        {"request_id": True, "outcome": 0},
        {"request_id": "  ", "outcome": 0},
    ):
        r = post(client, "/feedback", bad)
        assert r.status_code == 422 and "request_id" in r.json["details"], (bad, r.json)
        p = post(
            client,
            "/predict",
            bad if isinstance(bad, str) else {"request_id": bad["request_id"], "features": example()},
        )
        assert p.status_code == 422 and "request_id" in p.json["details"], (bad, p.json)
    assert post(client, "/feedback", {"request_id": 7, "outcome": 0}).json["request_id"] == "7"  # as /predict
    assert post(client, "/feedback", {"request_id": "ok-2", "outcome": 0}).status_code == 202
    state.plog.flush()
    assert {f["request_id"]: f["outcome"] for f in state.store.find_feedback()} == {"ok-1": 1, "7": 0, "ok-2": 0}
    h = client.get("/health").json
    assert h["status"] == "ok" and h["store_ok"] and h["prediction_log"]["quarantined"] == 0


def test_reused_request_id_logs_every_prediction(app_client):
    """Item 14: three answers with one request_id (two single, one in a batch) are three log
    entries with their own `_id`; feedback for the id joins all of them."""
    client, state = app_client
    probs = []
    for age in (30, 50):
        probs.append(post(client, "/predict", {"request_id": "dup", "features": example(customer_age=age)}).json)
    b = post(
        client,
        "/predict/batch",
        [{"request_id": "dup", "features": example(customer_age=60)}, {"request_id": "other", "features": example()}],
    )
    assert b.status_code == 200
    for rid in ("stream:s:1", "stream:"):
        r = post(client, "/predict/batch", [{"request_id": rid, "features": example()}])
        assert r.status_code == 422 and "0.request_id" in r.json["details"]
    wait_logged(state, 4)
    dup = [r for r in state.store.find_predictions() if r["request_id"] == "dup"]
    assert len(dup) == 3 and len({r["_id"] for r in dup}) == 3
    assert sorted(r["features"]["customer_age"] for r in dup) == [30.0, 50.0, 60.0]
    assert not any(str(r["_id"]).startswith("stream:") for r in state.store.find_predictions())


def test_health_says_degraded_while_the_store_is_down(serving_settings, bundles):
    """Item 12: /health names the failing part and the counts while the store is away."""
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager
    from tests.support.serving import local_model_set

    store = FlakyStore(SQLiteStore(serving_settings.state_dir / "p.db"))
    mm = ModelManager(serving_settings)
    mm.current = local_model_set(bundles)
    app = create_app(serving_settings, store=store, models=mm, start_background=False)
    plog = app.extensions["churn"].plog
    plog.start()
    c = app.test_client()
    try:
        store.down = True
        for i in range(5):
            assert post(c, "/predict", {"request_id": f"d{i}", "features": example()}).status_code == 200
        deadline = time.monotonic() + 5
        while plog.store_ok and time.monotonic() < deadline:
            time.sleep(0.02)
        h = c.get("/health").json
        assert h["status"] == "degraded" and h["prediction_log"]["degraded"] == ["store"]
        assert h["prediction_log"]["spooled"] >= 5 and h["prediction_log"]["dropped"] == 0
        assert "store is down" in h["prediction_log"]["last_error"]
        store.down = False
        deadline = time.monotonic() + 10
        while (not plog.store_ok or store.inner.count_predictions() < 5) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/health").json["status"] == "ok" and store.inner.count_predictions() == 5
    finally:
        plog.close()
