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

Stream consumers take shards by lease (the design of Kinesis' client library) and keep each shard's
checkpoint in its lease: see `Lease` and the `*_lease` methods (compare-and-set on the counter).

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


# raised by the encoding of one record (JSON/BSON, a lone surrogate, an int beyond 64 bits, a key
# or value the record lacks): the record's doing, whatever the store
RECORD_ERRORS: tuple[type[BaseException], ...] = (UnicodeError, TypeError, ValueError, KeyError, OverflowError)


def is_record_error(exc: BaseException) -> bool:
    """Whether `exc` comes from encoding the records themselves (see `RECORD_ERRORS`); an OSError
    or a timeout never is (a ConnectionError is also neither a TypeError nor a ValueError)."""
    return isinstance(exc, RECORD_ERRORS) and not isinstance(exc, (OSError, TimeoutError))


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


SHARD_END = "SHARD_END"  # a lease's checkpoint once its shard is closed and read to its end


def seq_order(checkpoint_seq: str | None) -> str:
    """A checkpoint's sequence number in a form whose string order is the integer order: zero-padded to
    80 digits (Kinesis numbers have up to 56), SHARD_END after every number, "" for none."""
    if checkpoint_seq is None:
        return ""
    if checkpoint_seq == SHARD_END:
        return "~"
    if not checkpoint_seq.isdigit() or len(checkpoint_seq) > 80:
        raise ValueError(f"sequence number {checkpoint_seq[:100]!r} is not a number of at most 80 digits")
    return checkpoint_seq.zfill(80)


@dataclass
class Lease:
    """One shard's lease: who processes it, until when, and how far it got.

    `counter` is the fencing token: it changes with every change of hands (take, steal request,
    hand-off, release), never on renewal, and every conditional write names the counter it expects.
    `expires` is UNIX seconds (the consumers' clocks must agree to well under a lease duration).
    `checkpoint` is the encoded checkpoint (serving.checkpoint) or SHARD_END; `seq` its `seq_order`.
    `parents` are the lease keys of the shards this one was split or merged from; `pending_owner`
    a consumer waiting for the owner to hand the lease over (balancing)."""

    key: str
    owner: str | None = None
    counter: int = 0
    expires: float = 0.0
    checkpoint: str | None = None
    seq: str = ""
    parents: list[str] = field(default_factory=list)
    pending_owner: str | None = None

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END

    def to_doc(self) -> dict:
        return {
            "_id": self.key,
            "owner": self.owner,
            "counter": self.counter,
            "expires": self.expires,
            "checkpoint": self.checkpoint,
            "seq": self.seq,
            "parents": list(self.parents),
            "pending_owner": self.pending_owner,
        }

    @classmethod
    def from_doc(cls, d: dict) -> "Lease":
        return cls(
            str(d["_id"]),
            d.get("owner"),
            int(d.get("counter") or 0),
            float(d.get("expires") or 0.0),
            d.get("checkpoint"),
            str(d.get("seq") or ""),
            list(d.get("parents") or []),
            d.get("pending_owner"),
        )


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

    # ---- shard leases (stream consumers) --------------------------------------------------------------
    def create_lease(self, lease: Lease) -> bool:
        """Insert `lease` unless its key exists; True when this call created it."""
        raise NotImplementedError(f"{type(self).__name__} keeps no leases")

    def get_lease(self, key: str) -> Lease | None:
        raise NotImplementedError(f"{type(self).__name__} keeps no leases")

    def list_leases(self, prefix: str) -> list[Lease]:
        """Every lease whose key starts with `prefix`, by key."""
        raise NotImplementedError(f"{type(self).__name__} keeps no leases")

    def cas_lease(
        self, key: str, counter: int, owner: str | None, expires: float, pending_owner: str | None, bump: bool
    ) -> bool:
        """Compare-and-set: when the stored counter is `counter`, set owner, expires and pending_owner
        (and the counter to `counter + 1` when `bump`); True when it was set. The checkpoint is never
        touched here (only `checkpoint_lease` moves it)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no leases")

    def checkpoint_lease(
        self, key: str, owner: str, counter: int, checkpoint: str | None, seq: str, backwards_ok: bool = False
    ) -> bool:
        """Set the checkpoint when `owner` holds the lease at `counter` and `seq` (`seq_order`) is not
        before the stored one; True when it was set (False: lease lost, or it would go backwards).
        `backwards_ok` only for discarding a checkpoint that does not fit the stream (see serving.checkpoint)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no leases")

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

    def add_rejections(self, counts: list[dict]) -> None:
        """Append counts of rejected records (`ts` of the minute, `source`, `reason`, `field`, `count`;
        churnops/monitoring/rejections.py); rejected records are never logged, only counted here.
        Backends implement it; the base refuses."""
        raise NotImplementedError(f"{type(self).__name__} keeps no rejection counts")

    def find_rejections(self, start: float | None = None, end: float | None = None) -> list[dict]:
        """The rejection counts with start <= ts < end."""
        raise NotImplementedError(f"{type(self).__name__} keeps no rejection counts")

    @abstractmethod
    def ping(self) -> bool:
        """True when the backend answers."""

    def is_record_error(self, exc: BaseException) -> bool:
        """True only when `exc` is provably about the records written (one of them cannot be
        encoded, is too large, breaks a key or constraint): the prediction log then isolates the
        record that causes it and quarantines it. Anything else (down, busy, locked, full, corrupt,
        credentials refused, or an error this method does not know) is the store's state: the log
        keeps the records on disk and retries. Backends add the errors their driver raises."""
        return is_record_error(exc)

    def is_unavailable(self, exc: BaseException) -> bool:
        """The store is down or cannot write now (retry later, keep the records): any error that
        `is_record_error` does not claim."""
        return not self.is_record_error(exc)

    def describe(self) -> str:
        """Which store this is, for /health and logs (no secrets)."""
        return type(self).__name__

    def cache_key(self) -> str:
        """Names the data this store reads (the monitoring cache keeps window summaries under it);
        by default this object, so two objects never share an entry."""
        return f"{type(self).__name__}@{id(self)}"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
