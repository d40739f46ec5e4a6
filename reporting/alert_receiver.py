"""Alertmanager webhook receiver: each notification becomes one Slack-compatible message.

Alertmanager (monitoring/alertmanager*.yml) groups, deduplicates, silences and retries; this
service only turns its webhook JSON (version 4) into `{"text": ...}` and posts it to
`SLACK_WEBHOOK_URL` (`reporting.alerts.send_alert`: timeout, retries, the URL redacted in logs).
It answers 200 when the message went out, 502 when Slack could not be reached (Alertmanager then
retries on its own schedule), 400 naming the field when the body is not a notification. Nothing
in the monitoring path waits for it: Prometheus hands alerts to Alertmanager asynchronously.

    python -m reporting.alert_receiver   # 127.0.0.1:ALERT_RECEIVER_PORT (9099), POST /alerts
"""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from churnops.settings import get_settings
from reporting.alerts import send_alert

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
MAX_ALERTS_LISTED = 10
EMOJI = {"firing": ":rotating_light:", "resolved": ":white_check_mark:"}


class BadNotification(ValueError):
    def __init__(self, field: str, expected: str):
        super().__init__(f"{field}: expected {expected}")
        self.field, self.expected = field, expected


def slack_text(notification: dict) -> str:
    """One message for an Alertmanager notification: status, group, and each alert's summary."""
    if not isinstance(notification, dict):
        raise BadNotification("body", "a JSON object (Alertmanager webhook notification)")
    alerts = notification.get("alerts")
    if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts):
        raise BadNotification("alerts", "a list of alert objects")
    status = notification.get("status")
    if status not in ("firing", "resolved"):
        raise BadNotification("status", "'firing' or 'resolved'")
    group = notification.get("groupLabels") or {}
    name = group.get("alertname") or ", ".join(f"{k}={v}" for k, v in sorted(group.items())) or "alerts"
    firing = sum(1 for a in alerts if a.get("status") == "firing")
    lines = [f"{EMOJI[status]} *{status.upper()}* {name} ({firing} firing, {len(alerts) - firing} resolved)"]
    for a in alerts[:MAX_ALERTS_LISTED]:
        labels = a.get("labels") or {}
        ann = a.get("annotations") or {}
        sev = labels.get("severity", "")
        extra = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
        summary = ann.get("summary") or ann.get("description") or labels.get("alertname", "")
        lines.append(f"• [{sev}] {labels.get('alertname', '')}: {summary}" + (f" ({extra})" if extra else ""))
    if len(alerts) > MAX_ALERTS_LISTED:
        lines.append(f"… and {len(alerts) - MAX_ALERTS_LISTED} more")
    return "\n".join(lines)


def make_handler(slack_url: str | None, timeout_s: float, retries: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/health":
                self._answer(200, {"status": "ok", "slack_configured": bool(slack_url)})
            else:
                self._answer(404, {"error": "not found", "details": {"path": "expected /health or POST /alerts"}})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/alerts":
                self._answer(404, {"error": "not found", "details": {"path": "expected POST /alerts"}})
                return
            try:
                size = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                size = -1
            if not 0 < size <= MAX_BODY:
                self._answer(400, {"error": "invalid body", "details": {"body": f"expected 1..{MAX_BODY} bytes"}})
                return
            try:
                text = slack_text(json.loads(self.rfile.read(size)))
            except ValueError as exc:  # JSONDecodeError and BadNotification
                field = getattr(exc, "field", "body")
                expected = getattr(exc, "expected", "JSON")
                self._answer(400, {"error": "invalid notification", "details": {field: f"expected {expected}"}})
                return
            sent = send_alert(slack_url, text, timeout_s, retries)
            self._answer(200 if sent["sent"] else 502, {"sent": sent["sent"], "error": sent["error"]})

        def log_message(self, fmt: str, *args) -> None:
            log.info("%s " + fmt, self.address_string(), *args)

    return Handler


def make_server(host: str, port: int, slack_url: str | None, timeout_s: float = 5.0, retries: int = 2):
    """The receiver's HTTP server (not started)."""
    return ThreadingHTTPServer((host, port), make_handler(slack_url, timeout_s, retries))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = get_settings()
    if not s.slack_webhook_url:
        log.warning("SLACK_WEBHOOK_URL is not set: notifications are answered 502 (Alertmanager retries)")
    srv = make_server(s.alert_receiver_host, s.alert_receiver_port, s.slack_webhook_url, s.alert_timeout_s)
    log.info("alert receiver on http://%s:%d/alerts", s.alert_receiver_host, s.alert_receiver_port)
    srv.serve_forever()


if __name__ == "__main__":
    main()
