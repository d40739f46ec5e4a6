"""Reports web server: nginx config valid; nginx and the Python fallback never escape the folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from reporting.webserver import nginx_binary, nginx_test, python_server, render_config

ROOT = Path(__file__).resolve().parents[2]
PROBES = [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/reports/../secret.txt",
    "/./../secret.txt",
    "/..%5csecret.txt",
    "//etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def site():
    """A world-readable temp folder (nginx workers may run as nobody) with reports and a secret beside it."""
    d = Path(tempfile.mkdtemp(prefix="reports-site-"))
    os.chmod(d, 0o755)
    reports = d / "reports"
    reports.mkdir()
    (d / "secret.txt").write_text("TOP-SECRET")
    (reports / "index.html").write_text("<html>index</html>")
    (reports / "report-20260101T000000Z.html").write_text("<html>report</html>")
    (reports / ".index.html.1.tmp").write_text("hidden")
    (reports / "sub").mkdir()
    (reports / "sub" / "x.txt").write_text("x")
    os.symlink(d / "secret.txt", reports / "link.txt")
    for p in [reports, reports / "sub"]:
        os.chmod(p, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def raw_get(port: int, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    """Send the path byte-for-byte (no client-side normalisation)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def check_rules(port: int) -> None:
    status, headers, body = raw_get(port, "/")
    assert status == 200 and b"index" in body and headers["cache-control"] == "no-cache"
    status, headers, body = raw_get(port, "/report-20260101T000000Z.html")
    assert status == 200 and b"report" in body and "immutable" in headers["cache-control"]
    assert raw_get(port, "/report-20260101T000000Z.html", "HEAD")[0] == 200
    for probe in PROBES:
        status, _, body = raw_get(port, probe)
        assert status in (400, 404), (probe, status)
        assert b"TOP-SECRET" not in body and b"root:" not in body
    assert raw_get(port, "/sub/")[0] in (403, 404)  # no directory listing
    assert raw_get(port, "/.index.html.1.tmp")[0] == 404  # no dot-files
    assert raw_get(port, "/link.txt")[0] in (403, 404)  # symlink out of the folder refused
    assert raw_get(port, "/", "POST")[0] == 405
    assert raw_get(port, "/index.html", "DELETE")[0] == 405


def test_python_fallback_rules(site):
    srv = python_server(site / "reports", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        check_rules(srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed")
def test_nginx_config_and_rules(real_server, site):
    port = free_port()
    conf = render_config(site / "reports", site / "nginx", port)
    r = nginx_test(conf)
    assert r.returncode == 0, r.stderr
    assert "syntax is ok" in r.stderr and "[warn]" not in r.stderr
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reporting.webserver",
            "--dir",
            str(site / "reports"),
            "--prefix",
            str(site / "nginx"),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "ENV_FILE": "/nonexistent"},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(
                        proc.stdout.read().decode() if proc.poll() is not None else "timeout"
                    ) from None
                time.sleep(0.2)
        check_rules(port)
    finally:
        pid_file = site / "nginx" / "nginx.pid"
        os.killpg(proc.pid, 15)
        proc.wait(10)
        assert not pid_file.exists() or proc.returncode is not None


@pytest.mark.parametrize(
    "path, expected", [("/" + "a" * 60_000, 414), ("/" + "b" * 300 + ".html", 404), ("/" + "c/" * 3000, 414)]
)
def test_python_fallback_answers_long_paths_cleanly(site, path, expected):
    """A 60 KB path (or one name longer than the file system allows) got no answer and a trace."""
    srv = python_server(site / "reports", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        port = srv.server_address[1]
        status, headers, _ = raw_get(port, path)
        assert status == expected
        assert raw_get(port, "/")[0] == 200, "still serving"
    finally:
        srv.shutdown()
        srv.server_close()
