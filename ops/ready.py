"""Wait until the HTTP API says it is ready (`make start-serve`, `make demo`), or fail saying why.

    python -m ops.ready [--url http://127.0.0.1:9696] [--timeout 180]

Polls `<url>/ready` (200 once the model is loaded, 503 while it loads or after a failed load),
printing what it waits for each time the answer changes; exits 0 with the served version once
ready, 1 after `--timeout` seconds (default READY_TIMEOUT_S) naming the last answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from churnops.settings import get_settings


class NotReady(TimeoutError):
    """The API did not say ready in time; the message holds its last answer."""


def probe(url: str, timeout: float = 3.0) -> tuple[int | None, str]:
    """(HTTP status or None when nothing answered, the body or the connection error) of GET `url`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (the configured API URL)
            return r.status, r.read(2000).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(2000).decode("utf-8", "replace")
    except OSError as exc:
        return None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def describe(status: int | None, body: str) -> str:
    """One line for an answer of /ready."""
    if status is None:
        return f"no answer ({body})"
    try:
        doc = json.loads(body)
    except ValueError:
        return f"HTTP {status}: {body[:200]}"
    detail = doc.get("detail") or doc.get("details") or {}
    what = detail.get("model") if isinstance(detail, dict) else None
    return f"HTTP {status}: {doc.get('error') or doc.get('status')}" + (f" ({what})" if what else "")


def wait_ready(
    api_url: str,
    timeout_s: float,
    interval_s: float = 1.0,
    say: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Poll `<api_url>/ready` until it answers 200; returns that answer. Raises `NotReady` after
    `timeout_s` with the last answer."""
    url = api_url.rstrip("/") + "/ready"
    say(f"waiting up to {timeout_s:.0f} s for {url} to say ready (the model loads in the background)")
    deadline, last = clock() + timeout_s, None
    while True:
        status, body = probe(url)
        if status == 200:
            doc = json.loads(body)
            say(f"ready: {url} serves run {doc.get('run_id')} (version {doc.get('version')})")
            return doc
        line = describe(status, body)
        if line != last:
            say(f"  not ready yet: {line}")
            last = line
        if clock() >= deadline:
            raise NotReady(f"{url} did not say ready within {timeout_s:.0f} s; last answer: {line}")
        time.sleep(interval_s)


def main(argv: list[str] | None = None) -> int:
    s = get_settings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=s.api_url, help="the API's base URL (default API_URL)")
    p.add_argument("--timeout", type=float, default=s.ready_timeout_s, help="seconds (default READY_TIMEOUT_S)")
    a = p.parse_args(argv)
    try:
        wait_ready(a.url, a.timeout)
    except NotReady as exc:
        print(f"error: {exc} (see `make logs`)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
