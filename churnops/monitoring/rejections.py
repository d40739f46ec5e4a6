"""Rejected records per window: counted by reason and field, kept in the line's prediction store.

A record the API or a stream consumer refuses (schema errors, a body that is not JSON, an image it
cannot decode) never reaches the prediction log. `RejectionCounter.add` counts it in memory per
(minute, source, reason) and per field its errors name; `flush` appends those counts to the store
(`PredictionStore.add_rejections`, one row per key: bounded however many records are refused), on
its own background thread every few seconds in a server. Field names are the contract's features
and the request's parts (`body`, `request_id`, ...); any other key of the error details counts as `other`, so a client cannot grow the table with names.

`rejection_summary` reads the counts of a window: the records rejected in all, their rate against
the records logged, by reason, by source and by field, and a status: `fail` above
`QUALITY_REJECTION_RATE` (the window summary's `rejections`, folded into `quality`, the report, the
gauges `churn_window_rejection_rate` / `churn_window_rejections{reason}` and the alert
ChurnWindowRejectionRateHigh).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable

log = logging.getLogger(__name__)

RECORDS = ""  # the `field` of the rows that count records (the others count the fields named)
OTHER = "other"
ENVELOPE = frozenset({"body", "request_id", "features", "records", "image"})  # the request's own parts
MAX_KEYS = 10_000  # distinct keys held between flushes; past it, new keys are counted as `other`
OK, FAIL = "ok", "fail"


def field_of(key: str, fields: frozenset[str]) -> str:
    """A contract feature (or a part of the request: `body`, `request_id`, ...) named by an
    error-detail key (`customer_age`, `features.customer_age`, `records[3].customer_age`), else `other`."""
    name = str(key).rsplit(".", 1)[-1]
    return name if name in fields or name in ENVELOPE else OTHER


class RejectionCounter:
    """Counts of rejected records held in memory until `flush` writes them to `store`."""

    def __init__(self, store, fields: Iterable[str] = (), interval_s: float = 5.0):
        self.store = store
        self.fields = frozenset(fields)
        self.interval_s = interval_s
        self.counts: Counter = Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.dropped = 0  # counts lost because the store refused them (the Prometheus counters keep them)

    def add(self, source: str, reason: str, details: dict | None = None, ts: float | None = None) -> None:
        """Count one rejected record of `source` (`http`, `stream`) for `reason`, and each field its details name."""
        minute = float(int((time.time() if ts is None else ts) // 60) * 60)
        keys = [(minute, source, reason, RECORDS)]
        keys += [(minute, source, reason, f) for f in sorted({field_of(k, self.fields) for k in details or {}})]
        with self.lock:
            for k in keys:
                if k not in self.counts and len(self.counts) >= MAX_KEYS:
                    k = (minute, source, OTHER, k[3] and OTHER)
                self.counts[k] += 1

    def flush(self) -> int:
        """Append the counts held to the store; returns how many rows were written (0 when it failed)."""
        with self.lock:
            held, self.counts = self.counts, Counter()
        rows = [{"ts": m, "source": s, "reason": r, "field": f, "count": n} for (m, s, r, f), n in held.items()]
        if not rows:
            return 0
        try:
            self.store.add_rejections(rows)
        except Exception as exc:  # never blocks serving; the Prometheus counters still count them
            self.dropped += sum(held.values())
            log.warning("rejection counts not stored (%s: %s)", type(exc).__name__, exc)
            return 0
        return len(rows)

    def start(self) -> None:
        """Flush every `interval_s` on a daemon thread."""
        if self.thread is None:
            self.thread = threading.Thread(target=self.run, name="rejection-counts", daemon=True)
            self.thread.start()

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.flush()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=self.interval_s + 1)
        self.flush()


def rejection_summary(store, start: float, end: float, logged: int, settings) -> dict:
    """The rejections of [start, end) against the `logged` records of the window (see the module docstring)."""
    try:
        rows = store.find_rejections(start=start, end=end)
    except NotImplementedError as exc:
        return {"available": False, "message": str(exc)}
    by_reason: Counter = Counter()
    by_source: Counter = Counter()
    by_field: Counter = Counter()
    for r in rows:
        if r["field"] == RECORDS:
            by_reason[r["reason"]] += r["count"]
            by_source[r["source"]] += r["count"]
        else:
            by_field[r["field"]] += r["count"]
    total = sum(by_reason.values())
    rate = total / (total + logged) if total + logged else 0.0
    limit = settings.quality_rejection_rate
    out = {
        "available": True,
        "total": total,
        "rate": rate,
        "by_reason": dict(by_reason.most_common()),
        "by_source": dict(by_source.most_common()),
        "by_field": dict(by_field.most_common()),
        "status": FAIL if total and rate > limit else OK,
    }
    if out["status"] == FAIL:
        top = ", ".join(f"{k} {v}" for k, v in by_reason.most_common(3))
        out["problem"] = f"{rate:.1%} of records rejected ({total}: {top}) > {limit:.1%}"
    return out
