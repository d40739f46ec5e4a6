"""Prediction log store: the interface every backend implements (embedded default, MongoDB).

Record shapes (plain dicts, JSON-serialisable apart from nothing):

prediction = {
    "_id": str,                 # request_id for HTTP; "stream:<shard_id>:<sequence_number>" for Kinesis
    "ts": float,                # UNIX seconds, UTC
    "request_id": str,
    "source": "http" | "stream",
    "model_run_id": str, "model_version": str | None,
    "route": "champion" | "challenger",
    "features": dict,           # clean feature values as validated (contract names)
    "probability": float, "decision": int, "latency_ms": float,
}
feedback = {"_id": request_id, "request_id": str, "outcome": 0 | 1, "ts": float}
report   = {"_id": str, "ts": float, ...headline numbers...}

Writes are idempotent by `_id` (a re-emitted stream batch or a replayed spool file does not
duplicate records).

Backends: `serving.store_sqlite.SQLiteStore` (embedded default, one WAL-mode file shared by all
processes) and `serving.store_mongo.MongoStore` (when MONGODB_URI is set);
`serving.store_factory.open_store(settings)` picks one. Servers write through
`serving.prediction_log.PredictionLog` (background batching, disk spool while the store is down).
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class PredictionStore(ABC):
    """What the servers, the report flow and the trigger need from the prediction log."""

    @abstractmethod
    def insert_predictions(self, records: list[dict]) -> int:
        """Upsert prediction records by `_id`; returns how many were new."""

    @abstractmethod
    def find_predictions(self, start: float | None = None, end: float | None = None,
                         limit: int | None = None) -> list[dict]:
        """Predictions with start <= ts < end, oldest first."""

    @abstractmethod
    def count_predictions(self, start: float | None = None, end: float | None = None) -> int:
        """How many predictions lie in the window."""

    @abstractmethod
    def add_feedback(self, request_id: str, outcome: int, ts: float) -> None:
        """Record the realized outcome for a request (last write wins)."""

    @abstractmethod
    def find_feedback(self, request_ids: list[str] | None = None, start: float | None = None,
                      end: float | None = None) -> list[dict]:
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

    @abstractmethod
    def ping(self) -> bool:
        """True when the backend answers."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
