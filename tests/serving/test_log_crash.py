"""A gunicorn worker killed with SIGKILL under load loses no prediction it answered (real gunicorn)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from ops.localservers import Server, free_port, wait_http
from tests.support.serving import example

ROOT = Path(__file__).resolve().parents[2]


def _get(port: int, path: str) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        c.close()


def test_sigkill_of_a_worker_loses_no_answered_prediction(real_server, tmp_path, bundles):
    """Item 15: two workers, a 3 s flush window (the records a worker holds in memory), load from
    four clients; one worker is SIGKILLed mid-load. Every request answered 200 is in the log
    afterwards (the killed worker's journal is replayed by the master's child_exit hook and the
    other workers), each once."""
    port = free_port()
    state = tmp_path / "state"
    env = {
        "MODEL_URI": str(bundles["a"]),
        "STATE_DIR": str(state),
        "API_PORT": str(port),
        "API_WORKERS": "2",
        "LOG_FLUSH_INTERVAL_S": "3",
        "CANARY_FRACTION": "0",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "PROMETHEUS_MULTIPROC_DIR": str(state / "prom"),
        "MONGODB_URI": "",
        "ADMIN_TOKEN": "test-admin-crash",
    }
    srv = Server(
        [sys.executable, "-m", "serving.server"],
        tmp_path / "gunicorn.log",
        env=env,
        cwd=ROOT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 60, srv.proc, tmp_path / "gunicorn.log")
        pids: set[int] = set()
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            st, h = _get(port, "/health")
            if st == 200 and h["model_loaded"]:
                pids.add(h["pid"])
        assert len(pids) == 2, "both workers should be up"
        answered: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()
        body = example()

        def client(k: int) -> None:
            conn, i = None, 0
            while not stop.is_set():
                rid = f"c{k}-{i}"
                i += 1
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request(
                        "POST",
                        "/predict",
                        json.dumps({"request_id": rid, "features": body}),
                        {"Content-Type": "application/json"},
                    )
                    r = conn.getresponse()
                    r.read()
                    if r.status == 200:
                        with lock:
                            answered.append(rid)
                except (OSError, http.client.HTTPException):
                    conn = None  # the killed worker's connection: reconnect

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        victim = next(iter(pids))
        os.kill(victim, signal.SIGKILL)
        before_kill = len(answered)
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(15)
        assert before_kill > 50 and len(answered) > before_kill
        from churnops.store.sqlite import SQLiteStore

        store = SQLiteStore(state / "predictions.db")
        want = set(answered)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            logged = [r["request_id"] for r in store.find_predictions()]
            if want <= set(logged):
                break
            time.sleep(0.25)
        missing = want - set(logged)
        assert not missing, f"{len(missing)} of {len(want)} answered predictions not in the log"
        assert len(logged) == len(set(logged)), "a replayed journal duplicated log entries"
    finally:
        srv.stop()
