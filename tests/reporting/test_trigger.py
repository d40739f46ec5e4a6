"""Retraining trigger: cooldown, reasons recorded in the store, webhook retries on a real local server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reporting.alerts import send_alert
from reporting.trigger import HISTORY, LAST_DECISION, LAST_STARTED, evaluate_trigger, evaluate_window
from tests.support.memory_store import MemoryStore
from tests.support.monitoring import CALM, CRITICAL, log_window


class Starter:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return f"flow-run-{self.calls}"


def test_cooldown_starts_training_once_per_window(settings_factory):
    s = settings_factory(retrain_cooldown_hours=12)
    store, start = MemoryStore(), Starter()
    t = 1_800_000_000.0
    d1 = evaluate_trigger(store, s, CRITICAL, None, start_training=start, now=t)
    d2 = evaluate_trigger(store, s, CRITICAL, None, start_training=start, now=t + 3600)
    assert (d1["action"], d2["action"]) == ("started", "cooldown")
    assert start.calls == 1 and d1["flow_run_id"] == "flow-run-1"
    assert d2["next_allowed"] == pytest.approx(t + 12 * 3600)
    assert float(store.get_checkpoint(LAST_STARTED)) == t
    # a calm window: nothing to do, nothing started
    assert evaluate_trigger(store, s, CALM, None, start_training=start, now=t + 7200)["action"] == "none"
    # after the cooldown: starts again
    d3 = evaluate_trigger(store, s, CRITICAL, None, start_training=start, now=t + 12 * 3600 + 1)
    assert d3["action"] == "started" and start.calls == 2
    last = json.loads(store.get_checkpoint(LAST_DECISION))
    assert last["action"] == "started" and "data drift critical: 3 feature(s) a, b, c" in last["reasons"][0]
    assert [h["action"] for h in json.loads(store.get_checkpoint(HISTORY))] == [
        "started",
        "none",
        "cooldown",
        "started",
    ]


def test_reasons_auc_floor_and_prediction_drift(settings_factory):
    s = settings_factory(auc_floor=0.85)
    store, start = MemoryStore(), Starter()
    perf = {"overall": {"auc_roc": 0.61, "n": 300}}
    d = evaluate_trigger(store, s, CALM, perf, start_training=start, now=1.0)
    assert d["started"] and d["reasons"] == ["realized AUC 0.610 < floor 0.85 on 300 labelled predictions"]
    few = {"overall": {"auc_roc": 0.5, "n": 10}}  # too few labels to judge
    assert evaluate_trigger(MemoryStore(), s, CALM, few, start_training=start, now=1.0)["action"] == "none"
    pred = dict(CALM, prediction={"status": "critical", "psi": 0.4, "p_value": 1e-9})
    assert (
        "prediction drift critical"
        in evaluate_trigger(MemoryStore(), s, pred, None, start_training=start, now=1.0)["reasons"][0]
    )


def test_failed_start_is_recorded_and_retried(settings_factory):
    s = settings_factory()
    store = MemoryStore()

    def broken():
        raise ConnectionError("prefect down")

    d = evaluate_trigger(store, s, CRITICAL, None, start_training=broken, now=10.0)
    assert d["action"] == "start_failed" and "prefect down" in d["error"]
    assert store.get_checkpoint(LAST_STARTED) is None  # no cooldown consumed
    assert evaluate_trigger(store, s, CRITICAL, None, start_training=Starter(), now=20.0)["action"] == "started"


class Hook:
    """A local webhook that answers 500 `fail` times, then 200; records the bodies."""

    def __init__(self, fail: int):
        hook = self
        self.fail, self.bodies = fail, []

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                code = 500 if len(hook.bodies) <= hook.fail else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_webhook_retries_until_success():
    hook = Hook(fail=2)
    try:
        r = send_alert(hook.url, "drift!", timeout_s=2, retries=3, backoff_s=0.01)
        assert r == {"sent": True, "attempts": 3, "status": 200, "error": None}
        assert hook.bodies == [{"text": "drift!"}] * 3
        r = send_alert(
            hook.url.replace(str(hook.srv.server_address[1]), "1"), "x", timeout_s=0.5, retries=1, backoff_s=0.01
        )
        assert not r["sent"] and r["attempts"] == 2 and "ConnectError" in r["error"]
    finally:
        hook.close()


def test_trigger_alerts_via_webhook(settings_factory):
    hook = Hook(fail=1)
    try:
        s = settings_factory(alert_webhook_url=hook.url, alert_retries=2, alert_timeout_s=2)
        d = evaluate_trigger(MemoryStore(), s, CRITICAL, None, start_training=Starter(), now=5.0)
        assert d["alert"]["sent"] and d["alert"]["attempts"] == 2
        assert "retraining started" in hook.bodies[-1]["text"] and "data drift critical" in hook.bodies[-1]["text"]
    finally:
        hook.close()


def test_retrain_flow_on_window(settings_factory, contract, reference, monkeypatch, tmp_path):
    """`flows/retrain_flow.py:retrain_trigger_flow` over a drifted window, training start injected."""
    import time

    from flows import retrain_flow

    store = MemoryStore()
    log_window(store, contract, 600, seed=4, end=time.time() - 1, hours=1, drift=["missing", "shift"])
    s = settings_factory()
    d = evaluate_window(store, s, contract, window_hours=3, reference=reference, start_training=Starter())
    assert d["action"] == "started" and d["window"]["n"] == 600
    assert "income_category" in d["reasons"][0] and "total_trans_ct" in d["reasons"][0]
    # the flow itself (called as a function), store and reference injected through the module's helpers
    monkeypatch.setattr("flows.retrain_flow.open_store", lambda settings: store)
    monkeypatch.setattr("churnops.monitoring.reference.load_reference", lambda *a, **k: reference)
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))
    out = retrain_flow.retrain_trigger_flow.fn(window_hours=3, dry_run=True)
    assert retrain_flow.retrain_trigger_flow.name == "retrain-trigger"
    assert out["action"] == "cooldown"  # started a moment ago through the same store
    store.checkpoints.pop(LAST_STARTED)
    out = retrain_flow.retrain_trigger_flow.fn(window_hours=3, dry_run=True)
    assert out["action"] == "dry_run" and out["flow_run_id"] is None
    assert store.get_checkpoint(LAST_STARTED) is None  # a dry run consumes no cooldown
    starter = Starter()
    out = retrain_flow.retrain_trigger_flow.fn(window_hours=3, start_training=starter)
    assert out["action"] == "started" and starter.calls == 1


def test_webhook_url_is_never_logged(caplog):
    """Issue 13 item 19: the webhook URL is a secret (token in its path): a failure names only its host."""
    hook = Hook(fail=10)
    try:
        url = hook.url.replace("/hook", "/services/T000/B000/XSECRETX?token=qq")
        r = send_alert(url, "x", timeout_s=2, retries=1, backoff_s=0.01)
        assert not r["sent"] and r["attempts"] == 2 and r["error"] == "HTTP 500"
        assert "XSECRETX" not in caplog.text and "qq" not in caplog.text
        assert f"127.0.0.1:{hook.srv.server_address[1]}/***" in caplog.text
    finally:
        hook.close()
