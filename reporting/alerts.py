"""Webhook alerts: Slack-compatible JSON `{"text": ...}` with a timeout and retries; never raises."""

from __future__ import annotations

import logging
import time

import httpx

from churnops.redact import redact

log = logging.getLogger(__name__)


def send_alert(
    url: str | None,
    text: str,
    timeout_s: float = 5.0,
    retries: int = 3,
    backoff_s: float = 0.5,
    extra: dict | None = None,
) -> dict:
    """POST `{"text": text}` to `url`; retry (exponential backoff) on errors and non-2xx answers.

    Returns `{"sent": bool, "attempts": n, "status": last HTTP status or None, "error": str|None}`.
    """
    if not url:
        return {"sent": False, "attempts": 0, "status": None, "error": "no webhook configured"}
    payload = {"text": text, **(extra or {})}
    status, error = None, None
    attempts = max(1, int(retries) + 1)
    for i in range(attempts):
        try:
            r = httpx.post(url, json=payload, timeout=timeout_s)
            status = r.status_code
            if 200 <= status < 300:
                return {"sent": True, "attempts": i + 1, "status": status, "error": None}
            error = f"HTTP {status}"
            if 400 <= status < 500 and status not in (408, 429):
                break  # the request itself is wrong: retrying will not help
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if i + 1 < attempts:
            time.sleep(min(backoff_s * 2**i, 10.0))
    error = redact(error, path=True)  # httpx messages may quote the URL: its path is the secret
    log.warning("webhook alert to %s failed after %d attempt(s): %s", redact(url, path=True), i + 1, error)
    return {"sent": False, "attempts": i + 1, "status": status, "error": error}
