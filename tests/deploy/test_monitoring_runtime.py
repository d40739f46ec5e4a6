"""Nginx (compose config) and Prometheus (embedded stack) checked with the real binaries where installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

from tests.support.deploy import ROOT


def server_block(text: str) -> str:
    """The `server { ... }` block, dedented, blank-normalised."""
    start = text.index("server {")
    depth, end = 0, start
    for k in range(start, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                end = k + 1
                break
    lines = [ln.strip() for ln in text[start:end].splitlines()]
    return "\n".join(ln for ln in lines if ln)


def test_compose_nginx_serves_the_reports_with_the_embedded_rules():
    template = (ROOT / "nginx" / "nginx.conf").read_text()
    compose = (ROOT / "nginx" / "reports.compose.conf").read_text()
    expected = (
        server_block(template).replace("{{HOST}}:{{PORT}}", "0.0.0.0:8888").replace("{{REPORTS_DIR}}", "/srv/reports")
    )
    assert server_block(compose) == expected
    assert "{{" not in compose


@pytest.mark.skipif(
    not shutil.which("nginx") and not shutil.which("/usr/sbin/nginx"), reason="nginx not installed (make system-deps)"
)
def test_compose_nginx_config_passes_nginx_t(tmp_path):
    """The conf.d file inside an http block, as the nginx image includes it; paths moved into tmp."""
    reports = tmp_path / "reports"
    reports.mkdir()
    (tmp_path / "logs").mkdir()
    body = (ROOT / "nginx" / "reports.compose.conf").read_text().replace("/srv/reports", str(reports))
    body = body.replace("listen 0.0.0.0:8888;", "listen 127.0.0.1:1;")  # never bound by -t
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\nevents {{}}\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {tmp_path}/tmp;\n{body}\n}}\n"
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    out = subprocess.run(
        [nginx, "-t", "-p", f"{tmp_path}/", "-e", f"{tmp_path}/logs/error.log", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (loopback)
        return json.loads(r.read())


@pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus not installed (make system-deps)")
def test_embedded_prometheus_scrapes_the_api_with_the_alert_rules(real_server, tmp_path):
    from churnops.settings import Settings
    from ops import services
    from ops.localservers import Server, free_port, wait_http

    port = free_port()
    s = Settings(_env_file=None, state_dir=tmp_path, prometheus_port=port)
    srv = Server(services.prometheus_argv(s, shutil.which("prometheus")), tmp_path / "prometheus.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 60, srv.proc, tmp_path / "prometheus.log")
        deadline = time.monotonic() + 30
        while True:
            targets = get_json(f"http://127.0.0.1:{port}/api/v1/targets")["data"]["activeTargets"]
            jobs = {t["labels"]["job"]: t["scrapeUrl"] for t in targets}
            if "churn-api" in jobs or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert jobs["churn-api"] == "http://127.0.0.1:9696/metrics"
        assert jobs["churn-drift"] == "http://127.0.0.1:9696/drift/metrics"
        rules = get_json(f"http://127.0.0.1:{port}/api/v1/rules")["data"]["groups"]
        names = {r["name"] for g in rules for r in g["rules"]}
        expected = set(re.findall(r"^\s*- alert:\s*(\S+)", (ROOT / "monitoring" / "alerts.yml").read_text(), re.M))
        assert expected and names == expected
    finally:
        srv.stop()
