"""What the HTTP edge needs from the app, whatever server runs it (serving/server.py: granian).

`EdgeMiddleware` wraps the WSGI app:

- a body declared (Content-Length) above the route's limit is read and thrown away (up to
  `DRAIN_MAX_BYTES` or twice the limit, whichever is more, and for at most `drain_s` seconds) before
  the app answers 413: a client that sends its whole body before it reads (Python's urllib and
  requests) reads the 413 instead of a broken pipe; a larger one, or one that trickles, is answered
  unread with `Connection: close` (a client that waits for an early answer, like curl, reads it at once);
- a chunked body is marked as terminated (`wsgi.input_terminated`: the server ends the stream at
  the last chunk), so Flask reads it, and stops at MAX_BODY_BYTES with a 413.

`mark_dead_workers` does for the Prometheus multiprocess folder what gunicorn's `child_exit` hook
did: the files of a worker that no longer runs are marked dead (its gauges leave the sums).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from psutil import pid_exists
from werkzeug.exceptions import RequestEntityTooLarge

log = logging.getLogger(__name__)
DRAIN_MAX_BYTES = (
    16 << 20
)  # above this (and twice the route's limit) an oversize body is not read: answered with a close
DRAIN_STEP = 1 << 16


class EdgeMiddleware:
    """Oversize bodies drained before their 413, chunked bodies readable (see the module)."""

    def __init__(self, app: Callable, max_body: int, route_limits: dict[str, int] | None = None, drain_s: float = 10.0):
        self.app = app
        self.max_body = int(max_body)
        self.route_limits = dict(route_limits or {})
        self.drain_s = float(drain_s)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        te = environ.get("HTTP_TRANSFER_ENCODING")
        if te and "chunked" in te.lower():
            environ["wsgi.input_terminated"] = True
            return self.app(environ, start_response)
        try:
            n = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return self.app(environ, start_response)
        limit = self.route_limits.get(environ.get("PATH_INFO", ""), self.max_body)
        if n <= limit:
            return self.app(environ, start_response)
        drained = n <= max(DRAIN_MAX_BYTES, 2 * limit) and drain(environ["wsgi.input"], n, self.drain_s)

        def close_after(status, headers, exc_info=None):
            if not drained:
                headers = [(k, v) for k, v in headers if k.lower() != "connection"] + [("Connection", "close")]
            return start_response(status, headers, exc_info)

        return self.app(environ, close_after)  # the app refuses it from its Content-Length, reading nothing


def drain(stream, n: int, seconds: float = 10.0) -> bool:
    """Read and discard `n` bytes of `stream`; False when it ended first or took over `seconds`."""
    left, deadline = n, time.monotonic() + seconds
    while left > 0:
        if time.monotonic() > deadline:
            return False
        got = stream.read(min(left, DRAIN_STEP))
        if not got:
            return False
        left -= len(got)
    return True


def read_capped(stream, limit: int) -> bytes:
    """A body of unknown length (chunked): all of it, or RequestEntityTooLarge past `limit` bytes.

    werkzeug's own read stops at MAX_CONTENT_LENGTH without a word (the body comes back cut short)."""
    out = bytearray()
    while len(out) <= limit:
        got = stream.read(min(DRAIN_STEP, limit + 1 - len(out)))
        if not got:
            return bytes(out)
        out += got
    raise RequestEntityTooLarge()


_PID = re.compile(r"_(\d+)\.db$")


def mark_dead_workers(folder: str | Path | None = None) -> int:
    """Mark the metric files of processes that no longer run as dead; how many pids were marked."""
    folder = folder or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder or not Path(folder).is_dir():
        return 0
    from prometheus_client import multiprocess

    pids = {int(m.group(1)) for p in Path(folder).glob("*.db") if (m := _PID.search(p.name))}
    dead = [pid for pid in pids if pid != os.getpid() and not pid_exists(pid)]
    for pid in dead:
        try:
            multiprocess.mark_process_dead(pid, str(folder))
        except OSError:
            log.warning("could not mark the metrics of process %s dead", pid)
    return len(dead)
