"""The prediction store split by what each caller needs (typing.Protocol; structural, nothing to inherit).

`churnops.store.base.PredictionStore` (SQLite, MongoDB) implements all four; a caller annotates
the narrowest one it uses, so a test double or another backend need only offer that part:

- `PredictionRecords`: the prediction log itself (predictions and feedback): the servers' log
  writer (serving.prediction_log), the monitoring window, /logs, the label collector;
- `CheckpointStore`: named checkpoints and the stream consumers' shard leases (serving.leases,
  the retraining trigger's state, the label collector's position);
- `AuditStore`: the append-only governance trail (churnops.governance, `GET /audit`);
- `ReportStore`: report metadata (reporting.report, `/drift/report`'s last report).

Record shapes are documented in churnops/store/base.py.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from churnops.store.base import Lease, PredictionBatch


@runtime_checkable
class PredictionRecords(Protocol):
    """Predictions and feedback: written by the servers' log, read by monitoring and reports."""

    def insert_predictions(self, records: list[dict]) -> int: ...

    def insert_batch(self, batch: PredictionBatch) -> int: ...

    def find_predictions(
        self, start: float | None = None, end: float | None = None, limit: int | None = None
    ) -> list[dict]: ...

    def count_predictions(self, start: float | None = None, end: float | None = None) -> int: ...

    def add_feedback(self, request_id: str, outcome: int, ts: float) -> None: ...

    def add_feedback_many(self, items: list[dict]) -> None: ...

    def find_feedback(
        self, request_ids: list[str] | None = None, start: float | None = None, end: float | None = None
    ) -> list[dict]: ...

    def ping(self) -> bool: ...

    def is_record_error(self, exc: BaseException) -> bool: ...

    def is_unavailable(self, exc: BaseException) -> bool: ...

    def describe(self) -> str: ...

    def cache_key(self) -> str: ...


@runtime_checkable
class CheckpointStore(Protocol):
    """Named checkpoints and the stream consumers' shard leases (compare-and-set on the counter)."""

    def get_checkpoint(self, key: str) -> str | None: ...

    def set_checkpoint(self, key: str, value: str) -> None: ...

    def create_lease(self, lease: Lease) -> bool: ...

    def get_lease(self, key: str) -> Lease | None: ...

    def list_leases(self, prefix: str) -> list[Lease]: ...

    def cas_lease(
        self, key: str, counter: int, owner: str | None, expires: float, pending_owner: str | None, bump: bool
    ) -> bool: ...

    def checkpoint_lease(
        self, key: str, owner: str, counter: int, checkpoint: str | None, seq: str, backwards_ok: bool = False
    ) -> bool: ...


@runtime_checkable
class AuditStore(Protocol):
    """The append-only audit trail of promotions, rollbacks and approvals."""

    def add_audit(self, record: dict) -> dict: ...

    def find_audit(self, limit: int = 50, offset: int = 0, model: str | None = None) -> list[dict]: ...


@runtime_checkable
class ReportStore(Protocol):
    """Metadata of the reports built (upsert by `_id`), newest first."""

    def save_report(self, meta: dict) -> None: ...

    def list_reports(self, limit: int = 100) -> list[dict]: ...


class MonitoringStore(PredictionRecords, ReportStore, Protocol):
    """What a report needs: the window's predictions and feedback, and where its metadata goes."""


class CheckpointedRecords(PredictionRecords, CheckpointStore, Protocol):
    """Predictions and feedback, and a position in them (a checkpoint): the label collector, the
    retraining trigger."""
