"""The HTTP edge against misbehaving clients (issue 18), on the API's real server (`python -m
serving.server`, 2 workers): no client freezes a worker; `/health` keeps answering within 2 s.

Each scenario holds its connections open while /health is probed every 0.25 s (churnops/badclients.py),
then checks that predictions are still answered."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from churnops import badclients
from ops.localservers import Server, free_port, wait_http
from tests.support.serving import api_env, example, request, wait_ready

ROOT = Path(__file__).resolve().parents[2]
HOLD_S = 3.0


@pytest.fixture(scope="module")
def edge_api(real_server, bundles, tmp_path_factory):
    d = tmp_path_factory.mktemp("edge")
    port = free_port()
    srv = Server(
        [sys.executable, "-m", "serving.server"],
        d / "server.log",
        env=api_env(bundles, d / "state", port, LOG_BATCH_SIZE="2000"),
        cwd=ROOT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 90, srv.proc, d / "server.log")
        wait_ready(port)
        yield {"port": port, "log": d / "server.log"}
    finally:
        srv.stop()


def predictions_still_answered(port: int) -> None:
    body = json.dumps(example()).encode()
    for _ in range(4):
        status, answer = request(port, "POST", "/predict", body)
        assert status == 200 and 0 <= json.loads(answer)["probability"] <= 1, (status, answer[:200])


def assert_health_held(result: dict) -> None:
    assert result["probes"] >= 4, result
    assert result["failed_or_over_2s"] == 0, f"/health failed or took over 2 s while the fault was held: {result}"


def test_a_chunked_body_with_a_fake_end_freezes_no_worker(edge_api):
    """`10\\r\\n\\r\\n0\\r\\n\\r\\n` announces a 16-byte chunk: the body is not over (the former worker
    took it as whole and Flask blocked reading the socket until the worker was killed)."""
    port = edge_api["port"]
    assert_health_held(badclients.held(port, lambda: badclients.fake_end(port, 4), HOLD_S))
    predictions_still_answered(port)


def test_an_endless_chunked_upload_freezes_no_worker(edge_api):
    """A chunked body sent as fast as possible, never ending: refused at MAX_BODY_BYTES, not buffered
    (the former worker copied its buffer on every read and served nothing else meanwhile)."""
    port = edge_api["port"]
    trickle = badclients.Trickle(port, 2, every=0.0)
    try:
        probe = badclients.probe_health(port, HOLD_S)
    finally:
        trickle.close()
    assert_health_held(probe.summary())
    predictions_still_answered(port)


def test_a_slow_oversize_upload_freezes_no_worker(edge_api):
    port = edge_api["port"]
    assert_health_held(badclients.held(port, lambda: badclients.SlowUpload(port, n=2), HOLD_S))
    predictions_still_answered(port)


def test_a_client_that_never_reads_a_large_answer_freezes_no_worker(edge_api):
    """GET /logs?limit=10000 (several MB) to clients that read nothing (the former worker wrote
    with blocking writes: one such client per worker stopped the API)."""
    port = edge_api["port"]
    rows = json.dumps([example()] * 1000).encode()
    for _ in range(11):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict/batch", data=rows, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 (loopback)
            assert r.status == 200
    deadline = time.monotonic() + 60  # the log writer stores the 11,000 rows in its own time (batches)
    while True:
        status, body = request(port, "GET", "/logs?limit=10000", timeout=30)
        if status != 200 or len(body) > 4_000_000 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200 and len(body) > 4_000_000, (status, len(body))  # larger than the socket buffers
    assert_health_held(badclients.held(port, lambda: badclients.slow_reader(port, n=4), HOLD_S))
    predictions_still_answered(port)


def test_an_oversize_body_from_urllib_reads_the_413(edge_api):
    """urllib sends all of its body before it reads: it must get the 413, not a broken pipe."""
    status, text = badclients.urllib_oversize(edge_api["port"], 8 << 20)
    assert status == 413, text
    assert "1000000 byte limit" in json.loads(text)["details"]["body"]


def test_a_chunked_body_is_read_and_capped(edge_api):
    """A legitimate chunked /predict is answered; one above MAX_BODY_BYTES gets the 413."""
    import socket

    port = edge_api["port"]
    body = json.dumps(example()).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + b"Connection: close\r\n\r\n" + chunked)
        status, answer = _answer(s)
    assert status == 200 and 0 <= json.loads(answer)["probability"] <= 1, answer[:300]
    big = b" " * 1_100_000
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + b"Connection: close\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big))
        status, answer = _answer(s)
    assert status == 413, answer[:300]


def _answer(s) -> tuple[int, bytes]:
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    head, _, rest = data.partition(b"\r\n\r\n")
    return (int(head.split()[1]) if head else 0), rest
