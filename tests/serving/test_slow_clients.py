"""Slow clients (issue 13, item 7): two clients that send half a request and stop must not hold
up anyone else, with the API's server alone (granian: a half-sent request holds one of a worker's
threads, never the worker; half-sent headers are dropped after api_read_timeout_s) and with nginx
in front (the embedded stack's proxy, which answers 408)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ops.localservers import Server, free_port, wait_http
from tests.support.paths import ROOT
from tests.support.serving import READ_TIMEOUT_S, api_env, example, read_answer, request, wait_ready


def half_body_clients(port: int, n: int = 2, headers_only: bool = False) -> list[socket.socket]:
    """Clients that announce a body and send half of it (or stop inside the headers), then nothing."""
    body = json.dumps(example()).encode()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if headers_only:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
        else:
            s.sendall(
                f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[: len(body) // 2]
            )
        socks.append(s)
    return socks


def normal_clients_are_served(port: int, n: int = 20) -> list[int]:
    """`n` predictions from 4 threads while the slow clients hang; each must come back well
    within the read timeout (a blocked worker would hold them for all of it)."""
    body = json.dumps(example()).encode()

    def one(_):
        return request(port, "POST", "/predict", body, timeout=READ_TIMEOUT_S - 1)[0]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(n)))


@pytest.fixture(scope="module")
def worker_api(real_server, bundles, tmp_path_factory):
    d = tmp_path_factory.mktemp("slow")
    port = free_port()
    srv = Server(
        [sys.executable, "-m", "serving.server"],
        d / "server.log",
        env=api_env(bundles, d / "state", port),
        cwd=ROOT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 90, srv.proc, d / "server.log")
        wait_ready(port)
        yield port
    finally:
        srv.stop()


@pytest.mark.parametrize("headers_only", [False, True], ids=["half-body", "half-headers"])
def test_half_sent_requests_do_not_block_the_workers(worker_api, headers_only):
    port = worker_api
    slow = half_body_clients(port, 2, headers_only)
    try:
        statuses = normal_clients_are_served(port)
        assert statuses == [200] * len(statuses)
        if headers_only:  # dropped (or a 408) once the header read deadline passes
            t0 = time.monotonic()
            for s in slow:
                assert read_answer(s)[0] in (0, 408)
            assert time.monotonic() - t0 < READ_TIMEOUT_S + 3
    finally:
        for s in slow:
            s.close()


def test_a_body_sent_in_pieces_within_the_deadline_is_served(worker_api):
    body = json.dumps(example()).encode()
    with socket.create_connection(("127.0.0.1", worker_api), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n")
        time.sleep(0.2)
        s.sendall(f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body[:10])
        time.sleep(0.2)
        s.sendall(body[10:])
        status, answer = read_answer(s)
    assert status == 200 and 0 <= json.loads(answer)["probability"] <= 1


def test_expect_100_continue_gets_one_interim_answer(worker_api):
    body = json.dumps(example()).encode()
    with socket.create_connection(("127.0.0.1", worker_api), timeout=10) as s:
        s.sendall(
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and b"100 Continue" not in data


# ---- nginx in front (the embedded stack's api-proxy) --------------------------------------------


class _OneAtATime(BaseHTTPRequestHandler):
    """A blocking, single-threaded upstream: any half request that reached it would stop it."""

    protocol_version = "HTTP/1.0"  # one request per connection

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(n)
        out = json.dumps({"seen": len(body), "xff": self.headers.get("X-Forwarded-For")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def nginx_api(real_server, tmp_path_factory):
    from churnops.nginx import nginx_binary

    if nginx_binary() is None:
        pytest.skip("nginx not installed (make system-deps installs it)")
    d = tmp_path_factory.mktemp("nginx-api")
    upstream = HTTPServer(("127.0.0.1", 0), _OneAtATime)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    env = {
        "STATE_DIR": str(d / "state"),
        "API_PORT": str(port),
        "API_INTERNAL_PORT": str(upstream.server_address[1]),
        "API_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        "MAX_BODY_BYTES": "20000",
        "ENV_FILE": "/nonexistent",
    }
    srv = Server([sys.executable, "-m", "serving.proxy"], d / "proxy.log", env=env, cwd=ROOT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 30, srv.proc, d / "proxy.log")
        yield port
    finally:
        srv.stop()
        upstream.shutdown()
        upstream.server_close()


def test_nginx_shields_a_blocking_upstream_from_half_sent_requests(nginx_api):
    slow = half_body_clients(nginx_api, 2) + half_body_clients(nginx_api, 2, headers_only=True)
    try:
        statuses = normal_clients_are_served(nginx_api)
        assert statuses == [200] * len(statuses)
        t0 = time.monotonic()
        for s in slow:  # nginx drops them after its client timeouts; the upstream never saw them
            assert read_answer(s)[0] in (0, 408)
        assert time.monotonic() - t0 < READ_TIMEOUT_S + 3
    finally:
        for s in slow:
            s.close()


def test_nginx_sets_the_client_address_and_answers_json_errors(nginx_api):
    with socket.create_connection(("127.0.0.1", nginx_api), timeout=10) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n")
        status, body = read_answer(s)
    assert status == 200 and json.loads(body)["xff"] == "127.0.0.1", "a client cannot claim another address"
    status, body = request(nginx_api, "POST", "/predict", b"x" * 30_000)
    assert status == 413 and "20000 byte limit" in json.loads(body)["details"]["body"]
