"""The API's real server (2 workers, a local model bundle): a worker killed under load is replaced,
and the replacement takes no traffic before its model is loaded (issue 13, item 5; issue 18)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from ops.localservers import Server, free_port, wait_http
from tests.support.serving import example

ROOT = Path(__file__).resolve().parents[2]
LOAD_DELAY_S = 2.0  # each worker's model load takes this long (a slow MLflow download, say)

# The API's WSGI entry with a model load made slow in every worker: patched before the app (and
# its background model loader) is created.
SLOW_WSGI = f"""
import time

import serving.model as m

real = m.load_model


def slow(*a, **k):
    time.sleep({LOAD_DELAY_S})
    return real(*a, **k)


m.load_model = slow

from serving.wsgi import app  # noqa: E402,F401
"""


def get(port: int, path: str) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        c.close()


def ready_workers(port: int, n: int = 2, timeout: float = 90) -> set[int]:
    """Pids of `n` workers that answer /health with their model loaded."""
    ready: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(ready) < n and time.monotonic() < deadline:
        st, body = get(port, "/health")
        if st == 200 and body["model_loaded"]:
            ready.add(body["pid"])
        time.sleep(0.05)
    return ready


@pytest.fixture(scope="module")
def server_api(real_server, bundles, tmp_path_factory):
    """One server for the module (its workers take seconds to start on a busy machine)."""
    tmp_path = tmp_path_factory.mktemp("server")
    port = free_port()
    (tmp_path / "slow_wsgi.py").write_text(SLOW_WSGI)
    env = {
        "MODEL_URI": str(bundles["a"]),
        "STATE_DIR": str(tmp_path / "state"),
        "API_PORT": str(port),
        "API_WORKERS": "2",
        "CANARY_FRACTION": "0",
        "LOG_FLUSH_INTERVAL_S": "0.05",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        "ADMIN_TOKEN": "test-admin",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}",
    }
    srv = Server(
        [sys.executable, "-m", "serving.server", "slow_wsgi:app"],
        tmp_path / "server.log",
        env=env,
        cwd=ROOT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 60, srv.proc, tmp_path / "server.log")
        yield {"port": port, "state": tmp_path / "state", "log": tmp_path / "server.log"}
    finally:
        srv.stop()


class Load:
    """Client threads posting /predict on kept-alive connections; a failed connection is reopened."""

    def __init__(self, port: int, threads: int = 4):
        self.port, self.stop = port, threading.Event()
        self.statuses: dict[int, int] = {}
        self.bodies: list[bytes] = []
        self.conn_errors = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        body = json.dumps(example()).encode()
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                with self.lock:
                    self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
                    if r.status != 200 and len(self.bodies) < 5:
                        self.bodies.append(data[:300])
                if r.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.conn_errors += 1
                if conn is not None:
                    conn.close()
                conn = None

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(15)


def test_a_replacement_worker_takes_no_traffic_before_its_model_is_loaded(server_api):
    port = server_api["port"]
    pids = ready_workers(port)
    assert len(pids) == 2, server_api["log"].read_text()[-3000:]
    victim = min(pids)
    with Load(port) as load:
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        new_pid = None
        deadline = time.monotonic() + 30
        while new_pid is None and time.monotonic() < deadline:  # the replacement loads, then serves
            time.sleep(0.2)
            try:
                st, body = get(port, "/health")
            except OSError:
                continue
            if body.get("pid") not in pids:
                new_pid = body["pid"]
                assert body["model_loaded"], "a worker answered before its model was loaded"
        time.sleep(1.0)
    statuses = dict(load.statuses)
    assert new_pid is not None, "the replacement worker never served"
    assert statuses.get(200, 0) > 50, statuses
    assert set(statuses) == {200}, f"non-200 answers {statuses}: {load.bodies}"
    assert load.conn_errors <= len(load.threads), (
        "only requests in flight on the killed worker may fail: " + server_api["log"].read_text()[-3000:]
    )
