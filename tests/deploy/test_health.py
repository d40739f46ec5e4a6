"""`churnops-health`: the containers' health check, against real local servers."""

from __future__ import annotations

import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.deploy import BIN


@pytest.fixture
def http_server():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # /<status> answers that status
            self.send_response(int(self.path.strip("/") or 200))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def health(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "churnops-health"), *args], capture_output=True, text=True, timeout=60, env=env)


def test_http_health_is_any_answer_below_500(http_server):
    from ops.localservers import free_port

    assert health(f"{http_server}/200").returncode == 0
    assert health(f"{http_server}/404").returncode == 0  # up, just no such page (nginx before the first report)
    bad = health(f"{http_server}/503")
    assert bad.returncode == 1 and "HTTP 503" in bad.stderr
    down = health(f"http://127.0.0.1:{free_port()}/health")
    assert down.returncode == 1 and "unhealthy" in down.stderr
    assert health().returncode == 2


def test_consumer_health_needs_the_stream_and_the_store(moto_endpoint, tmp_path):
    import os

    from churnops.aws import client
    from churnops.settings import Settings

    env = {
        **os.environ,
        "ENV_FILE": str(tmp_path / "none"),
        "AWS_ENDPOINT_URL": moto_endpoint,
        "STATE_DIR": str(tmp_path),
        "INPUT_STREAM": "health-in",
    }
    missing = health("consumer", env=env)
    assert missing.returncode == 1 and "stream health-in" in missing.stderr
    client("kinesis", Settings(_env_file=None, aws_endpoint_url=moto_endpoint)).create_stream(
        StreamName="health-in", ShardCount=1
    )
    ok = health("consumer", env=env)
    assert ok.returncode == 0, ok.stderr
