"""Kinesis stream consumer: `predictions` in, one result per record to `results`, poison to the DLQ.

    python -m serving.consumer            # CONSUMER_INDEX / CONSUMER_COUNT split the shards

Per batch (one get_records call per shard): decode every record (raw JSON or base64 of JSON),
validate it against the data contract, predict (one matrix per model), put one result per
valid record on `results` with put_records (failed entries retried), put each poison record
on `predictions-dlq` with the reason and the original payload, write the prediction-log records
synchronously (store, else spool on disk), and only then checkpoint the shard's last sequence
number in the store. A restart resumes AFTER_SEQUENCE_NUMBER the checkpoint (TRIM_HORIZON when
there is none), so nothing is lost and at most the last batch is re-emitted; results and log
records carry the input sequence number and log `_id`s are `stream:<shard>:<seq>` with the
record's arrival time as `ts`, so a re-emitted batch does not duplicate anything in the log. With several shards, up to
CONSUMER_THREADS of them are polled at once (each shard's batches stay in order; Kinesis calls
spend most of their time waiting on the endpoint).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from churnops.contract import load_contract
from churnops.settings import Settings, get_settings
from serving.inference import BadInput, FastValidator, Row, check_row, log_record, parse_json, predict_rows
from serving.metrics import get_metrics
from serving.model import ModelManager
from serving.prediction_log import PredictionLog
from serving.store import PredictionStore

log = logging.getLogger(__name__)

PUT_RETRIES = 8


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


def _payload_text(data: bytes) -> dict:
    try:
        return {"payload": data.decode("utf-8"), "payload_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"payload": base64.b64encode(data).decode(), "payload_encoding": "base64"}


def _arrival(rec: dict, default: float) -> float:
    """The record's arrival time on the stream (UNIX seconds): a batch re-emitted after a crash logs
    the same `ts` as the first time, so readers see one record in every time window."""
    t = rec.get("ApproximateArrivalTimestamp")
    try:
        return float(t.timestamp()) if t is not None else default
    except (AttributeError, TypeError, ValueError, OverflowError):
        return default


@dataclass
class ShardState:
    shard_id: str
    iterator: str | None
    last_seq: str | None


class Consumer:
    def __init__(self, settings: Settings | None = None, store: PredictionStore | None = None,
                 models: ModelManager | None = None, kinesis=None):
        from churnops.aws import client
        from serving.store_factory import open_store

        self.s = settings or get_settings()
        self.metrics = get_metrics()
        self.contract = load_contract(self.s.dataset)
        self.validator = FastValidator(self.contract, self.s.unknown_category)
        self.store = store or open_store(self.s)
        self.plog = PredictionLog(self.store, self.s.state_path(self.s.spool_dir, "spool"), self.s.log_batch_size,
                                  self.s.log_flush_interval_s, metrics=self.metrics,
                                  spool_max_bytes=self.s.spool_max_bytes, retry_max_s=self.s.log_retry_max_s)
        self.models = models or ModelManager(self.s, metrics=self.metrics)
        self.kin = kinesis or client("kinesis", self.s, max_attempts=4)
        self.shards: dict[str, ShardState] = {}
        self.stopping = False
        self.processed = 0
        self.dead = 0
        self._pending_checkpoints: dict[str, str] = {}
        self._last_shard_refresh = 0.0
        self._lock = threading.Lock()  # counters and pending checkpoints, shared by shard threads
        self._pool: ThreadPoolExecutor | None = None

    # ---- shards and checkpoints ------------------------------------------------------------------------
    def checkpoint_key(self, shard_id: str) -> str:
        return f"kinesis:{self.s.input_stream}:{shard_id}"

    def my_shards(self) -> list[str]:
        shards, token = [], None
        while True:
            kw = {"NextToken": token} if token else {"StreamName": self.s.input_stream}
            resp = self.kin.list_shards(**kw)
            shards += [sh["ShardId"] for sh in resp["Shards"]]
            token = resp.get("NextToken")
            if not token:
                break
        shards.sort()
        n, i = max(1, self.s.consumer_count), self.s.consumer_index
        return [sh for k, sh in enumerate(shards) if k % n == i % n]

    def _iterator(self, shard_id: str) -> tuple[str, str | None]:
        seq = self._pending_checkpoints.get(shard_id)
        if seq is None:
            try:
                seq = self.store.get_checkpoint(self.checkpoint_key(shard_id))
            except Exception as exc:  # store down: resume from what this process already did, else start
                log.warning("checkpoint read failed (%s); resuming from memory", exc)
                st = self.shards.get(shard_id)
                seq = st.last_seq if st else None
        if seq:
            it = self.kin.get_shard_iterator(StreamName=self.s.input_stream, ShardId=shard_id,
                                             ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seq)
        else:
            it = self.kin.get_shard_iterator(StreamName=self.s.input_stream, ShardId=shard_id,
                                             ShardIteratorType="TRIM_HORIZON")
        return it["ShardIterator"], seq

    def refresh_shards(self) -> None:
        for sh in self.my_shards():
            if sh not in self.shards:
                it, seq = self._iterator(sh)
                self.shards[sh] = ShardState(sh, it, seq)
                log.info("shard %s: %s", sh, f"resuming after {seq}" if seq else "from TRIM_HORIZON")
        self._last_shard_refresh = time.monotonic()

    def _checkpoint(self, shard_id: str, seq: str) -> None:
        with self._lock:
            self._pending_checkpoints[shard_id] = seq
            try:
                for sh, sq in list(self._pending_checkpoints.items()):
                    self.store.set_checkpoint(self.checkpoint_key(sh), sq)
                    del self._pending_checkpoints[sh]
            except Exception as exc:  # kept in memory; written once the store is back
                log.warning("checkpoint write failed (%s); will retry", exc)

    # ---- output -------------------------------------------------------------------------------------------
    def _put_all(self, stream: str, entries: list[dict]) -> None:
        """put_records in chunks of 500, retrying only the failed entries."""
        for i in range(0, len(entries), 500):
            todo = entries[i:i + 500]
            delay = 0.05
            for attempt in range(PUT_RETRIES + 1):
                try:
                    resp = self.kin.put_records(StreamName=stream, Records=todo)
                except Exception as exc:
                    if attempt == PUT_RETRIES:
                        raise
                    log.warning("put_records to %s failed (%s); retrying", stream, exc)
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if not resp.get("FailedRecordCount"):
                    break
                todo = [e for e, r in zip(todo, resp["Records"]) if r.get("ErrorCode")]
                if attempt == PUT_RETRIES:
                    raise RuntimeError(f"{len(todo)} record(s) still failing on {stream} after {PUT_RETRIES} retries")
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    # ---- one batch ------------------------------------------------------------------------------------------
    def process(self, shard_id: str, records: list[dict]) -> tuple[int, int]:
        """Handle one get_records batch; returns (results, dead letters)."""
        ms = self.models.current
        t0 = time.perf_counter()
        rows: list[tuple[dict, Row]] = []
        dlq: list[dict] = []
        for rec in records:
            seq = rec["SequenceNumber"]
            data = rec["Data"]
            try:
                obj = decode_payload(data)
                rid_default = seq
                row = check_row(obj, self.contract, self.s.unknown_category, validator=self.validator)
                if not (isinstance(obj, dict) and obj.get("request_id") is not None):
                    row.request_id = rid_default
                rows.append((rec, row))
            except BadInput as e:
                self.metrics.rejections.labels("stream", e.reason).inc()
                dlq.append({"reason": e.error, "reason_code": e.reason, "details": e.details, "shard_id": shard_id,
                            "sequence_number": seq, "partition_key": rec.get("PartitionKey"),
                            "ts": time.time(), **_payload_text(data)})
        now = time.time()
        results, logs = [], []
        if rows:
            preds = predict_rows(ms, [r for _, r in rows])
            latency = (time.perf_counter() - t0) * 1000 / max(1, len(rows))
            for (rec, row), (m, p, d) in zip(rows, preds):
                seq = rec["SequenceNumber"]
                out = {"request_id": row.request_id, "sequence_number": seq, "shard_id": shard_id,
                       "probability": p, "churn": bool(d), "decision": d, "threshold": m.threshold,
                       "model_run_id": m.run_id, "model_version": m.version, "route": m.route, "ts": now}
                if row.ignored:
                    out["ignored_fields"] = row.ignored
                results.append({"Data": json.dumps(out).encode(), "PartitionKey": row.request_id[:256]})
                logs.append(log_record(f"stream:{shard_id}:{seq}", row, m, p, d, "stream", latency,
                                       ts=_arrival(rec, now), shard_id=shard_id, sequence_number=seq))
                self.metrics.predictions.labels("stream", m.route, str(m.version), str(d)).inc()
        if results:
            self._put_all(self.s.output_stream, results)
        if dlq:
            self._put_all(self.s.dlq_stream, [{"Data": json.dumps(x, default=str).encode(),
                                               "PartitionKey": x["sequence_number"][-64:]} for x in dlq])
        if logs:
            self.plog.write_now(logs)  # store or fsync'ed spool, before the checkpoint moves
        self.metrics.stream_records.labels("result").inc(len(results))
        self.metrics.stream_records.labels("dead_letter").inc(len(dlq))
        with self._lock:
            self.processed += len(results)
            self.dead += len(dlq)
        return len(results), len(dlq)

    # ---- loop -------------------------------------------------------------------------------------------------
    def poll_once(self) -> int:
        """One get_records per owned shard (several shards at once); returns how many input records were handled."""
        if time.monotonic() - self._last_shard_refresh > 30:
            self.refresh_shards()
        items = [(sh, st) for sh, st in list(self.shards.items()) if st.iterator is not None]
        threads = min(len(items), max(1, self.s.consumer_threads))
        if threads > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="shard")
            handled = sum(self._pool.map(lambda x: self._poll_shard(*x), items))
        else:
            handled = sum(self._poll_shard(sh, st) for sh, st in items)
        if self._pending_checkpoints:
            self._checkpoint(*next(iter(dict(self._pending_checkpoints).items())))
        if not self.plog.store_ok or self.plog.spool_files():
            self.plog.maybe_replay()
        return handled

    def _poll_shard(self, sh: str, st: ShardState) -> int:
        """get_records on one shard, process the batch, checkpoint; returns how many records were handled."""
        from botocore.exceptions import ClientError

        if self.stopping:
            return 0
        try:
            resp = self.kin.get_records(ShardIterator=st.iterator, Limit=min(10_000, self.s.consumer_batch_size))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("ExpiredIteratorException", "InvalidArgumentException"):
                log.info("shard %s: iterator %s; renewing from the checkpoint", sh, code)
                st.iterator, _ = self._iterator(sh)
                return 0
            if code in ("ProvisionedThroughputExceededException", "LimitExceededException"):
                time.sleep(0.5)
                return 0
            raise
        records = resp.get("Records", [])
        handled = 0
        if records:
            try:
                self.process(sh, records)
            except Exception as exc:  # output stream down etc.: retry this batch from the checkpoint
                log.warning("shard %s: batch failed (%s: %s); retrying from the checkpoint", sh,
                            type(exc).__name__, exc)
                time.sleep(1.0)
                st.iterator, _ = self._iterator(sh)
                return 0
            st.last_seq = records[-1]["SequenceNumber"]
            self._checkpoint(sh, st.last_seq)
            handled = len(records)
        st.iterator = resp.get("NextShardIterator")
        if st.iterator is None:
            log.info("shard %s closed", sh)
        return handled

    def wait_for_model(self) -> None:
        delay = 1.0
        while self.models.current is None and not self.stopping:
            try:
                self.models.load_initial()
            except Exception as exc:
                log.warning("model not loaded yet (%s); retrying in %.0f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 1.5, 30)

    def run(self, max_idle_polls: int | None = None) -> None:
        """Consume until SIGTERM/SIGINT (or `max_idle_polls` empty polls in a row, for tests/bench)."""
        self.wait_for_model()
        if self.stopping:
            return
        self.refresh_shards()
        idle = 0
        last_follow = time.monotonic()
        try:
            while not self.stopping:
                n = self.poll_once()
                if time.monotonic() - last_follow > 2:
                    self.models.follow_state()
                    last_follow = time.monotonic()
                if n == 0:
                    idle += 1
                    if max_idle_polls is not None and idle >= max_idle_polls:
                        break
                    time.sleep(self.s.consumer_poll_interval_s)
                else:
                    idle = 0
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            self.plog.close()
            log.info("consumer stopped: %d results, %d dead letters", self.processed, self.dead)

    def install_signal_handlers(self) -> None:
        def stop(signum, frame):
            log.info("signal %s: finishing the current batch", signum)
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)


def main() -> None:
    from churnops.cli import fail, setup_logging

    setup_logging()
    s = get_settings()
    try:
        c = Consumer(s)
        c.install_signal_handlers()
        log.info("consumer %d/%d on %s -> %s (dlq %s)", s.consumer_index, s.consumer_count, s.input_stream,
                 s.output_stream, s.dlq_stream)
        c.run()
    except Exception as exc:
        fail(exc, f"stream consumer on {s.input_stream} at {s.aws_endpoint_url}")


if __name__ == "__main__":
    main()
