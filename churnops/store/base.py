"""Prediction log store: the interface every backend implements (embedded default, MongoDB).

Record shapes (plain dicts, JSON-serialisable apart from nothing):

prediction = {
    "_id": str,                 # this log entry's own id: random for HTTP (every prediction gets its own
                                #   entry, even when a client reuses a request_id); "stream:<stream created,
                                #   ms>:<shard_id>:<sequence_number>" for Kinesis (a re-emitted batch keeps its ids)
    "ts": float,                # UNIX seconds, UTC
    "request_id": str,
    "source": "http" | "stream",
    "model_run_id": str, "model_version": str | None,
    "route": "champion" | "challenger",
    "features": dict,           # clean feature values as validated (contract names)
    "probability": float, "decision": int, "latency_ms": float,
}
feedback = {"_id": request_id, "request_id": str, "outcome": 0 | 1 (a regression: float), "ts": float}
           # one per request_id: the one with the newest `ts` wins (a replayed old outcome never
           # overwrites a newer one); it applies to every prediction that carries the request_id
report   = {"_id": str, "ts": float, ...headline numbers...}
audit    = {"_id": str, "ts": float, "actor": str, "action": str, "model": str, "from_version", "to_version",
            "reason": str, "rules": list, ...}   # append-only (churnops.governance writes them)

Writes are idempotent by `_id` as readers see them: a re-emitted stream batch or a replayed
spool file never duplicates a record in `find_predictions` / `count_predictions`, and the first
write of an `_id` wins. (MongoDB enforces it on insert; the embedded store on read.)

A batch request's predictions travel as one `PredictionBatch` (columns, not 1,000 dicts) and
reach the store through `insert_batch`; `rows()` gives the same record dicts as above.

Backends: `churnops.store.sqlite.SQLiteStore` (embedded default, one WAL-mode file shared by all
processes) and `churnops.store.mongo.MongoStore` (when MONGODB_URI is set);
`churnops.store.factory.open_store(settings)` picks one. Servers write through
`serving.prediction_log.PredictionLog` (background batching, disk spool while the store is down).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _plain(v: Any) -> Any:
    return v.tolist() if isinstance(v, np.ndarray) else v


def feedback_outcome(value) -> int | float:
    """A feedback outcome as stored: 0/1 of a classifier; a regression's observed value stays a float."""
    return value if isinstance(value, float) else int(value)


@dataclass
class PredictionBatch:
    """Prediction records in columns: `const` holds the fields every row shares (ts, source, model,
    route, latency, ...), `cols` the per-row fields (`_id`, `request_id`, `probability`,
    `decision`), `features` one column per feature. Columns are lists or numpy arrays of length `n`.
    """

    const: dict
    cols: dict
    features: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.cols["_id"])

    def rows(self) -> list[dict]:
        """The batch as prediction record dicts (the shape documented above)."""
        cols = {k: _plain(v) for k, v in self.cols.items()}
        feats = {k: _plain(v) for k, v in self.features.items()}
        names, fcols = list(feats), list(feats.values())
        keys, ccols = list(cols), list(cols.values())
        out = []
        for i in range(self.n):
            r = dict(self.const)
            for k, c in zip(keys, ccols):
                r[k] = c[i]
            r["features"] = {k: c[i] for k, c in zip(names, fcols)}
            out.append(r)
        return out

    def to_doc(self) -> dict:
        """JSON-ready form (numpy arrays as lists); `from_doc` reverses it."""
        return {
            "const": self.const,
            "cols": {k: _plain(v) for k, v in self.cols.items()},
            "features": {k: _plain(v) for k, v in self.features.items()},
        }

    @classmethod
    def from_doc(cls, doc: dict) -> "PredictionBatch":
        return cls(dict(doc["const"]), dict(doc["cols"]), dict(doc.get("features") or {}))


class PredictionStore(ABC):
    """What the servers, the report flow and the trigger need from the prediction log."""

    @abstractmethod
    def insert_predictions(self, records: list[dict]) -> int:
        """Insert prediction records (idempotent by `_id`, first write wins); returns how many were
        written (new ones only, where the backend deduplicates on insert)."""

    def insert_batch(self, batch: PredictionBatch) -> int:
        """Store a columnar batch; backends with a columnar format override this."""
        return self.insert_predictions(batch.rows())

    @abstractmethod
    def find_predictions(
        self, start: float | None = None, end: float | None = None, limit: int | None = None
    ) -> list[dict]:
        """Predictions with start <= ts < end, oldest first."""

    @abstractmethod
    def count_predictions(self, start: float | None = None, end: float | None = None) -> int:
        """How many predictions lie in the window."""

    @abstractmethod
    def add_feedback(self, request_id: str, outcome: int, ts: float) -> None:
        """Record the realized outcome for a request; kept only when `ts` is not older than the
        stored one (newest wins, whatever order the writes arrive in)."""

    def add_feedback_many(self, items: list[dict]) -> None:
        """Several `{"request_id", "outcome", "ts"}` records (newest `ts` wins per request_id)."""
        for f in items:
            self.add_feedback(f["request_id"], f["outcome"], f["ts"])

    @abstractmethod
    def find_feedback(
        self, request_ids: list[str] | None = None, start: float | None = None, end: float | None = None
    ) -> list[dict]:
        """Feedback records by request id and/or by time window."""

    @abstractmethod
    def get_checkpoint(self, key: str) -> str | None:
        """A stored checkpoint value (e.g. last sequence number per shard)."""

    @abstractmethod
    def set_checkpoint(self, key: str, value: str) -> None:
        """Store a checkpoint value."""

    @abstractmethod
    def save_report(self, meta: dict) -> None:
        """Store report metadata (upsert by `_id`)."""

    @abstractmethod
    def list_reports(self, limit: int = 100) -> list[dict]:
        """Report metadata, newest first."""

    def add_audit(self, record: dict) -> dict:
        """Append one audit record (who, when, action, from, to, reason, rule results); never updated.

        Returns the stored record (with its `seq`/`_id`). Backends implement it; the base refuses.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no audit trail")

    def find_audit(self, limit: int = 50, offset: int = 0, model: str | None = None) -> list[dict]:
        """Audit records, newest first, paged; only those of registered model `model` when given."""
        raise NotImplementedError(f"{type(self).__name__} keeps no audit trail")

    @abstractmethod
    def ping(self) -> bool:
        """True when the backend answers."""

    def is_unavailable(self, exc: BaseException) -> bool:
        """True when `exc` means the store is down or busy (retry later, keep the records), False
        when it refuses the records themselves (the prediction log isolates and quarantines them)."""
        return isinstance(exc, (OSError, TimeoutError))

    def cache_key(self) -> str:
        """Names the data this store reads (the monitoring cache keeps window summaries under it);
        by default this object, so two objects never share an entry."""
        return f"{type(self).__name__}@{id(self)}"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
