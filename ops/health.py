"""`churnops-health`: the health check of the containers that run the project's image.

    churnops-health http://127.0.0.1:9696/health    # an HTTP service: any answer below 500
    churnops-health consumer                        # the stream consumer's dependencies answer
    churnops-health heartbeat                       # a simulator service: its last round is recent

Exit code 0 when healthy, 1 otherwise (one line on stderr says why).
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request

from churnops.aws import client
from churnops.settings import Settings, get_settings
from churnops.store.factory import open_store
from ops.services import heartbeat_max_age_s, heartbeat_path


def check_url(url: str, timeout: float = 5.0) -> str | None:
    """None when `url` answers with a status below 500, else the reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (a URL the operator passed)
            return None if r.status < 500 else f"{url}: HTTP {r.status}"
    except urllib.error.HTTPError as exc:
        return None if exc.code < 500 else f"{url}: HTTP {exc.code}"
    except OSError as exc:
        return f"{url}: {exc}"


def check_consumer(s: Settings) -> str | None:
    """None when the input stream and the prediction log both answer, else the reason."""
    try:
        client("kinesis", s).describe_stream_summary(StreamName=s.input_stream)
    except Exception as exc:
        return f"stream {s.input_stream}: {type(exc).__name__}: {str(exc)[:200]}"
    store = open_store(s)
    try:
        return None if store.ping() else "prediction store does not answer"
    finally:
        store.close()


def check_heartbeat(s: Settings) -> str | None:
    """None when this container's simulator touched its heartbeat recently, else the reason."""
    path, limit = heartbeat_path(s), heartbeat_max_age_s(s)
    try:
        age = time.time() - float(path.read_text().strip())
    except (OSError, ValueError) as exc:
        return f"no heartbeat at {path}: {exc}"
    return None if age <= limit else f"last round {age:.0f} s ago (limit {limit:.0f} s)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: churnops-health URL | consumer | heartbeat", file=sys.stderr)
        return 2
    checks = {"consumer": check_consumer, "heartbeat": check_heartbeat}
    why = checks[args[0]](get_settings()) if args[0] in checks else check_url(args[0])
    if why:
        print(f"unhealthy: {why}", file=sys.stderr)
        return 1
    return 0
