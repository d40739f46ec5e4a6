"""The embedded stack puts nginx in front of the API when nginx is installed (issue 13, item 7)."""

from __future__ import annotations

import pytest

from churnops.nginx import nginx_binary
from churnops.settings import Settings


def settings(tmp_path, **over) -> Settings:
    return Settings(**{"state_dir": tmp_path, "api_port": 9696, "api_internal_port": 9695, "_env_file": None, **over})


@pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed (make system-deps installs it)")
def test_nginx_takes_the_public_port_and_server_moves_to_loopback(real_server, tmp_path):
    from ops.stack import programs, render_config, with_proxy

    progs = {p.name: p for p in programs(settings(tmp_path))}
    proxy, api = progs["api-proxy"], progs["api"]
    assert proxy.port == 9696 and proxy.health == "http://127.0.0.1:9696/health" and proxy.group == "serve"
    assert api.port == 9695 and api.env["API_BIND"] == "127.0.0.1:9695"
    conf = render_config(settings(tmp_path))
    assert "[program:api-proxy]" in conf and 'API_BIND="127.0.0.1:9695"' in conf
    s = settings(tmp_path)
    assert with_proxy(s, ["api", "consumer"]) == ["api", "consumer", "api-proxy"], "proxy started after the API"
    assert with_proxy(s, ["api", "consumer"], stopping=True) == ["api-proxy", "api", "consumer"]
    assert with_proxy(s, ["consumer"]) == ["consumer"]


def test_without_the_proxy_the_server_keeps_the_public_port(tmp_path):
    from ops.stack import programs, with_proxy

    s = settings(tmp_path, api_proxy="off")
    progs = {p.name: p for p in programs(s)}
    assert "api-proxy" not in progs
    assert progs["api"].port == 9696 and "API_BIND" not in progs["api"].env
    assert with_proxy(s, ["api", "consumer"]) == ["api", "consumer"]


@pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed (make system-deps installs it)")
def test_rendered_proxy_config_passes_nginx_t(tmp_path):
    import subprocess

    from churnops.nginx import nginx_args
    from serving.proxy import render_config

    conf = render_config(settings(tmp_path, api_read_timeout_s=2.5, max_body_bytes=12345))
    text = conf.read_text()
    assert "listen 127.0.0.1:9696" in text and "server 127.0.0.1:9695;" in text
    assert "client_body_timeout   3s;" in text and "client_max_body_size    12345;" in text
    assert "client_max_body_size 20000000;" in text  # POST /predict/image: IMAGE_MAX_BODY_BYTES
    assert "limit_conn per_client 512;" in text and "proxy_send_timeout 3s;" in text  # issue 19: bounds
    r = subprocess.run(nginx_args(conf) + ["-t"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "[warn]" not in r.stderr, r.stderr
    with pytest.raises(ValueError, match="API_INTERNAL_PORT"):
        render_config(settings(tmp_path, api_internal_port=9696))


@pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed (make system-deps installs it)")
def test_nginx_limits_connections_per_client_with_a_json_429(real_server, tmp_path):
    """Issue 19: two requests held by an upstream that never answers; a third from the same address is a 429."""
    import json
    import socket
    import subprocess
    import time

    from churnops.nginx import nginx_args
    from ops.localservers import free_port
    from serving.proxy import render_config
    from tests.netfaults import BlackHole

    hole = BlackHole()
    port = free_port()
    conf = render_config(settings(tmp_path, api_port=port, api_internal_port=hole.port, api_conn_per_client=2))
    proc = subprocess.Popen(nginx_args(conf), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        req = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(req)
            held.append(s)
        while hole.accepted < 2:  # both requests are with the upstream now
            assert time.monotonic() < deadline, "the held requests never reached the upstream"
            time.sleep(0.05)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        held.append(s)
        s.sendall(req.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 429"), head
        assert "API_CONN_PER_CLIENT" in json.loads(body)["details"]["connections"]
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(timeout=10)
        hole.close()
