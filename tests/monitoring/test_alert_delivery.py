"""Alerts that reach someone: the webhook receiver, and one firing through a real Prometheus (the
project's rules, `for` shortened) and a real Alertmanager to the receiver and a fake Slack."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from churnops.monitoring.gauges import DriftGauges
from ops.localservers import Server, free_port, wait_http
from reporting.alert_receiver import make_server, slack_text

MON = Path(__file__).resolve().parents[2] / "monitoring"


class Recorder:
    """A local HTTP server recording JSON bodies POSTed to it (the fake Slack) or serving `body` on GET."""

    def __init__(self, body: bytes = b"", status: int = 200):
        self.posts: list[dict] = []
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                rec.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(status)
                self.end_headers()

            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def receiver():
    """(receiver URL, fake Slack recorder); the receiver posts to the recorder."""
    slack = Recorder()
    srv = make_server("127.0.0.1", 0, slack.url + "/hook", timeout_s=2.0, retries=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", slack
    srv.shutdown()
    srv.server_close()
    slack.close()


def post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (loopback)
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


NOTIFICATION = {
    "version": "4",
    "status": "firing",
    "groupLabels": {"alertname": "ChurnFeatureDriftCritical"},
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "ChurnFeatureDriftCritical", "severity": "warning"},
            "annotations": {"summary": "2 features drifted critically"},
        },
        {
            "status": "resolved",
            "labels": {"alertname": "ChurnFeatureDriftCritical", "severity": "warning", "route": "canary"},
            "annotations": {"summary": "1 feature drifted"},
        },
    ],
}


def test_slack_text_lists_each_alert():
    text = slack_text(NOTIFICATION)
    assert text.splitlines() == [
        ":rotating_light: *FIRING* ChurnFeatureDriftCritical (1 firing, 1 resolved)",
        "• [warning] ChurnFeatureDriftCritical: 2 features drifted critically",
        "• [warning] ChurnFeatureDriftCritical: 1 feature drifted (route=canary)",
    ]


def test_receiver_posts_to_slack_and_rejects_bad_bodies(receiver):
    url, slack = receiver
    code, body = post(url + "/alerts", json.dumps(NOTIFICATION).encode())
    assert code == 200 and body["sent"] is True
    assert slack.posts == [{"text": slack_text(NOTIFICATION)}]
    code, body = post(url + "/alerts", b'{"status": "firing", "alerts": "x"}')
    assert code == 400 and body["details"] == {"alerts": "expected a list of alert objects"}
    code, body = post(url + "/alerts", b"not json")
    assert code == 400 and "body" in body["details"]
    assert len(slack.posts) == 1


def test_receiver_answers_502_when_slack_is_down():
    port = free_port()  # nothing listens there
    srv = make_server("127.0.0.1", 0, f"http://127.0.0.1:{port}/hook", timeout_s=1.0, retries=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        code, body = post(f"http://127.0.0.1:{srv.server_address[1]}/alerts", json.dumps(NOTIFICATION).encode())
        assert code == 502 and body["sent"] is False and body["error"]
    finally:
        srv.shutdown()
        srv.server_close()


def require(binary: str) -> str:
    """A system binary `make system-deps` installs (root + apt); installed here when missing, else fail."""
    if shutil.which(binary) is None:
        subprocess.run(["make", "-s", "system-deps"], cwd=MON.parent, capture_output=True, timeout=600)
    path = shutil.which(binary)
    assert path, f"{binary} missing: run `make system-deps` (Debian packages prometheus, prometheus-alertmanager)"
    return path


def test_a_rule_fires_through_prometheus_and_alertmanager_to_slack(real_server, tmp_path, receiver):
    url, slack = receiver
    # the exporter: the drift gauges of a window whose data quality failed on two features
    reg = CollectorRegistry()
    DriftGauges(reg, multiprocess_mode=None).update(
        {"n": 500, "quality": {"status": "fail", "failed_features": ["a", "b"], "features": {}}}
    )
    exporter = Recorder(generate_latest(reg))
    am_port, prom_port = free_port(), free_port()
    am_cfg = (MON / "alertmanager.local.yml").read_text()
    am_cfg = am_cfg.replace("http://127.0.0.1:9099/alerts", url + "/alerts").replace(
        "group_wait: 30s", "group_wait: 1s"
    )
    (tmp_path / "am.yml").write_text(am_cfg)
    rules = re.sub(r"for: \S+", "for: 0s", (MON / "alerts.yml").read_text())  # the project's rules, firing at once
    (tmp_path / "alerts.yml").write_text(rules)
    host = exporter.url.removeprefix("http://")
    (tmp_path / "prom.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [alerts.yml]\n"
        f"alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]}}\n"
        f"scrape_configs: [{{job_name: churn-drift, static_configs: [{{targets: ['{host}']}}]}}]\n"
    )
    am = Server(
        [
            require("prometheus-alertmanager"),
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        tmp_path / "am.log",
    )
    prom = Server(
        [
            require("prometheus"),
            f"--config.file={tmp_path / 'prom.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--rules.alert.resend-delay=1s",  # an alert firing before Alertmanager is discovered is sent again soon
        ],
        tmp_path / "prom.log",
    )
    try:
        wait_http(f"http://127.0.0.1:{am_port}/-/ready", 60, am.proc, tmp_path / "am.log")
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready", 60, prom.proc, tmp_path / "prom.log")
        # a silence (Alertmanager's, not ours) on the other rule that fires here: no model metric at all
        now = datetime.now(timezone.utc)
        silence = {
            "matchers": [{"name": "alertname", "value": "ChurnNoModelLoaded", "isRegex": False, "isEqual": True}],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "test",
            "comment": "known: no API in this test",
        }
        code, _ = post(f"http://127.0.0.1:{am_port}/api/v2/silences", json.dumps(silence).encode())
        assert code == 200
        deadline = time.monotonic() + 60
        texts: list[str] = []
        while time.monotonic() < deadline:
            texts = [p["text"] for p in list(slack.posts)]
            if any("ChurnDataQualityFailure" in t for t in texts):
                break
            time.sleep(0.5)
        quality = [t for t in texts if "ChurnDataQualityFailure" in t]
        assert quality, f"no Slack message for the quality failure; got {texts}"
        assert quality[0].splitlines() == [  # max() drops the target's labels: no extra labels listed
            ":rotating_light: *FIRING* ChurnDataQualityFailure (1 firing, 0 resolved)",
            "• [warning] ChurnDataQualityFailure: data quality failing for 2 feature(s)",
        ]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the silenced alert reached Alertmanager, and stopped there
            with urllib.request.urlopen(f"http://127.0.0.1:{am_port}/api/v2/alerts?silenced=true", timeout=5) as r:  # noqa: S310
                states = {a["labels"]["alertname"]: a["status"] for a in json.loads(r.read())}
            if "ChurnNoModelLoaded" in states:
                break
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/alerts", timeout=5) as r:  # noqa: S310
            fired = sorted(a["labels"]["alertname"] for a in json.loads(r.read())["data"]["alerts"])
        assert "ChurnNoModelLoaded" in states, (fired, sorted(states))
        assert states["ChurnNoModelLoaded"]["state"] == "suppressed" and states["ChurnNoModelLoaded"]["silencedBy"]
        assert not any("ChurnNoModelLoaded" in p["text"] for p in slack.posts)
    finally:
        prom.stop()
        am.stop()
        exporter.close()
