"""The stream consumer's tabular records: `{"request_id": ..., "features": {...}}` or bare features.

`TabularProcessor` is the consumer's `RecordProcessor` (serving/stream_records.py) when DATASET names
a tabular contract. Each record is decoded (raw JSON or base64 of JSON), validated against the data
contract and predicted (one matrix per model); a record that fails for itself becomes a dead letter
with its reason. If a batch's prediction fails, its rows are predicted one by one; only when the
model also fails on the contract's own example is it the model's fault (`ModelFailure`). Results are
written with the HTTP answers' encoder (`serving.encoding.dumps`: a NaN becomes null).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from churnops.contract import DatasetContract, RecordResult
from churnops.speed import FastPaths
from serving.answers import answers_for
from serving.encoding import dumps
from serving.inference import BadInput, Row, check_row, log_record, predict_rows, response_body
from serving.loading import ModelSet
from serving.shadow import Mirror
from serving.stream_records import BatchOutcome, ModelFailure, RecordSink, arrival, decode_payload

log = logging.getLogger(__name__)


def stream_fields(shard_id: str, seq: str, now: float) -> dict:
    """What a stream result adds to `serving.inference.response_body` (the HTTP answer adds `latency_ms`):
    where the record came from (readers dedupe re-emitted results by shard_id + sequence_number) and when."""
    return {"sequence_number": seq, "shard_id": shard_id, "ts": now}


class TabularProcessor:
    """Feature records of one tabular contract -> results, log records, dead letters."""

    def __init__(self, sink: RecordSink, contract: DatasetContract):
        self.sink = sink
        self.s = sink.s
        self.contract = contract
        # FAST_PATHS=off: the reference validator
        self.validator: Callable[[Any], RecordResult] = FastPaths.from_settings(contract, self.s).record

    def row(self, rec: dict) -> Row:
        """The validated row of one stream record (its sequence number is the request id when it has none)."""
        obj = decode_payload(rec["Data"])
        row = check_row(obj, self.contract, self.s.unknown_category, validator=self.validator)
        if not (isinstance(obj, dict) and obj.get("request_id") is not None):
            row.request_id = rec["SequenceNumber"]
        return row

    def model_works(self, ms: ModelSet) -> bool:
        """Whether every model of the set predicts the contract's own example."""
        try:
            values = check_row(self.contract.example, self.contract, self.s.unknown_category).values
            for m in ms.models():
                m.bundle.predict_records([values])
            return True
        except Exception as exc:
            log.error("model cannot predict the contract's example (%s: %s)", type(exc).__name__, exc)
            return False

    def predict(self, ms: ModelSet, shard_id: str, rows: list[tuple[dict, Row]], dlq: list[dict]) -> list:
        """Predictions for `rows`. When the batch fails, rows are predicted one by one and those that fail
        alone become dead letters (removed from `rows`), unless the model fails on the contract's example
        too: then it raises ModelFailure (nothing is emitted and the batch is retried later)."""
        if not rows:
            return []
        try:
            return predict_rows(ms, [r for _, r in rows])
        except Exception as exc:
            if not self.model_works(ms):
                raise ModelFailure(f"the model fails on every record ({type(exc).__name__}: {exc})") from exc
        keep, out = [], []
        for rec, row in rows:
            try:
                out.append(predict_rows(ms, [row])[0])
                keep.append((rec, row))
            except Exception as exc:
                self.sink.metrics.rejections.labels("stream", "prediction_failed").inc()
                dlq.append(
                    self.sink.dead_letter(
                        shard_id,
                        rec,
                        "the model could not predict this record",
                        "prediction_failed",
                        {"exception": f"{type(exc).__name__}: {exc}"},
                    )
                )
        rows[:] = keep
        return out

    def process(self, shard_id: str, records: list[dict]) -> BatchOutcome:
        """Any exception a record causes while it is decoded, validated or predicted makes it a dead
        letter; the others go on."""
        sink, metrics = self.sink, self.sink.metrics
        ms = sink.models.current
        t0 = time.perf_counter()
        rows: list[tuple[dict, Row]] = []
        dlq: list[dict] = []
        for rec in records:
            try:
                rows.append((rec, self.row(rec)))
            except BadInput as e:
                metrics.rejections.labels("stream", e.reason).inc()
                sink.rejections.add("stream", e.reason, e.details)
                dlq.append(sink.dead_letter(shard_id, rec, e.error, e.reason, e.details))
            except Exception as e:  # RecursionError, MemoryError, anything else: this record's doing
                metrics.rejections.labels("stream", "undecodable").inc()
                sink.rejections.add("stream", "undecodable")
                dlq.append(
                    sink.dead_letter(
                        shard_id,
                        rec,
                        f"record could not be decoded or validated ({type(e).__name__})",
                        "undecodable",
                        {"exception": f"{type(e).__name__}: {e}"},
                    )
                )
        preds = self.predict(ms, shard_id, rows, dlq)
        now = time.time()
        results, logs = [], []
        mirror = Mirror([], records=[], source="stream", log_ids=[])  # the champion's rows (shadow traffic)
        latency = (time.perf_counter() - t0) * 1000 / max(1, len(rows))
        for (rec, row), (m, p, d) in zip(rows, preds):
            seq = rec["SequenceNumber"]
            try:
                out = response_body(row, m, p, d) | stream_fields(shard_id, seq, now)  # the HTTP answer's fields
                entry = {"Data": dumps(out), "PartitionKey": row.request_id[:256]}
                lrec = log_record(
                    sink.log_id(shard_id, seq),
                    row,
                    m,
                    p,
                    d,
                    "stream",
                    latency,
                    ts=arrival(rec, now),
                    shard_id=shard_id,
                    sequence_number=seq,
                )
            except Exception as exc:
                dlq.append(
                    sink.dead_letter(
                        shard_id,
                        rec,
                        "the result could not be encoded",
                        "result_encoding",
                        {"exception": f"{type(exc).__name__}: {exc}"},
                    )
                )
                continue
            results.append(entry)
            logs.append(lrec)
            if m.route == "champion":  # a pair is champion + shadow: the same request id, its own log _id
                mirror.request_ids.append(row.request_id)
                mirror.records.append(row.values)
                mirror.log_ids.append(f"{lrec['_id']}:shadow")
                mirror.champion_version = m.version
            metrics.predictions.labels(
                "stream", m.route, str(m.version), answers_for(m.bundle.task).decision_label(d)
            ).inc()
        return BatchOutcome(results, logs, dlq, mirror if mirror.request_ids else None)
