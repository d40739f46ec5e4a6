"""`python -m ops.ready`: wait for the API's /ready, or fail naming the last answer."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture
def fake_api():
    """A server whose /ready answers the queued (status, body) pairs in turn, then the last one forever."""
    answers: list[tuple[int, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            status, body = answers.pop(0) if len(answers) > 1 else answers[0]
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", answers
    srv.shutdown()
    srv.server_close()


def test_waits_through_loading_and_returns_the_ready_answer(fake_api):
    from ops.ready import wait_ready

    url, answers = fake_api
    loading = (503, {"error": "model not loaded", "details": {"model": "loading"}})
    answers += [loading, loading, (200, {"status": "ready", "run_id": "r1", "version": "3"})]
    said: list[str] = []
    doc = wait_ready(url, timeout_s=60, interval_s=0.01, say=said.append)
    assert doc == {"status": "ready", "run_id": "r1", "version": "3"}
    assert said[0].startswith(f"waiting up to 60 s for {url}/ready")
    assert said[1] == "  not ready yet: HTTP 503: model not loaded (loading)"  # printed once, not per poll
    assert said[2] == f"ready: {url}/ready serves run r1 (version 3)" and len(said) == 3


def test_timeout_names_the_last_answer(fake_api):
    from ops.ready import NotReady, wait_ready

    url, answers = fake_api
    answers.append((503, {"error": "model not loaded", "details": {"model": "ModelUriError: RUN_ID: no such run"}}))
    ticks = iter(range(100))  # a fake clock: the deadline passes after a few polls, no real waiting
    with pytest.raises(
        NotReady,
        match=r"did not say ready within 5 s; last answer: HTTP 503: model not loaded "
        r"\(ModelUriError: RUN_ID: no such run\)",
    ):
        wait_ready(url, timeout_s=5, interval_s=0.0, say=lambda _: None, clock=lambda: float(next(ticks)))


def test_nothing_listening_is_named(capsys):
    from ops.localservers import free_port
    from ops.ready import main

    url = f"http://127.0.0.1:{free_port()}"
    assert main(["--url", url, "--timeout", "0"]) == 1
    err = capsys.readouterr().err
    assert f"error: {url}/ready did not say ready within 0 s; last answer: no answer (" in err
