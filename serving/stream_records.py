"""The seam between the stream consumer and what it serves: one `RecordProcessor` per kind of record.

`serving.consumer.Consumer` owns the stream (shards, leases, checkpoints, the outbox); a processor
owns the records of one batch. The consumer hands a processor each get_records batch; the processor
decodes, checks and predicts every record and returns a `BatchOutcome`: the put_records entries for
`results`, the prediction-log records, and the dead letters it built through its `RecordSink` (the
consumer's public `dead_letter` and `log_id`), and the champion's rows to mirror to the shadow
candidate (`mirror`, serving/shadow.py). The consumer then writes the log, puts the results and dead
letters (`emit`), counts them, and only then offers the mirror (a non-blocking put). Two processors exist: tabular features
(serving/stream_tabular.py) and image_uri records (serving/image_stream.py).

A processor raises `ModelFailure` when the model fails on everything (nothing is emitted, the batch
is retried from the checkpoint) and lets transient errors out likewise; anything one record causes
is that record's dead letter.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Protocol

from churnops.monitoring.rejections import RejectionCounter
from churnops.settings import Settings
from serving.inference import BadInput, parse_json
from serving.metrics import Metrics
from serving.model import ModelManager
from serving.shadow import Mirror


class ModelFailure(RuntimeError):
    """The model cannot predict even the contract's example: not the records' fault."""


def decode_payload(data: bytes) -> object:
    """Raw JSON, or base64-encoded JSON (what `aws kinesis put-record --data <base64>` leaves with CLI v1)."""
    try:
        return parse_json(data)
    except BadInput as first:
        try:
            raw = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise first from None
        if not raw.strip():
            raise first from None
        return parse_json(raw)


def arrival(rec: dict, default: float) -> float:
    """The record's arrival time on the stream (UNIX seconds): a batch re-emitted after a crash logs
    the same `ts` as the first time, so readers see one record in every time window."""
    t = rec.get("ApproximateArrivalTimestamp")
    try:
        return float(t.timestamp()) if t is not None else default
    except (AttributeError, TypeError, ValueError, OverflowError):
        return default


@dataclass
class BatchOutcome:
    """What one batch produced: put_records entries for `results`, log records, dead-letter entries."""

    results: list[dict] = field(default_factory=list)
    logs: list[dict] = field(default_factory=list)
    dead: list[dict] = field(default_factory=list)
    mirror: Mirror | None = None  # the champion's rows, for shadow traffic (sampled by the consumer)


class RecordSink(Protocol):
    """What a processor uses of the consumer that feeds it."""

    s: Settings
    metrics: Metrics
    models: ModelManager
    rejections: RejectionCounter  # refused records by reason and field (the window's data quality)

    def dead_letter(self, shard_id: str, rec: dict, reason: str, code: str, details: object) -> dict:
        """The dead-letter entry of one record (a put_records entry; never raises)."""
        ...

    def log_id(self, shard_id: str, seq: str) -> str:
        """The prediction log `_id` of a stream record."""
        ...


class RecordProcessor(Protocol):
    """Turns one get_records batch into results, log records and dead letters."""

    def process(self, shard_id: str, records: list[dict]) -> BatchOutcome:
        """Every record of `records` ends in exactly one of `results` or `dead` (or the call raises)."""
        ...
