"""Kinesis stream consumer: `predictions` in, one result per record to `results`, poison to the DLQ.

    python -m serving.consumer            # any number of them: shards are taken by lease

Shards are taken by lease (serving/leases.py, the design of Kinesis' client library): a lease
table in the store with owner, counter and expiry per shard; consumers renew what they hold, take
over expired leases, balance when one joins, and checkpoint conditionally (only the lease's owner,
never backwards). After a reshard a child shard starts only when its parents were read to their
end. A consumer that loses a lease stops that shard before its next checkpoint. Killed without
a goodbye, a consumer's shards are taken over within about CONSUMER_LEASE_S (10 s): the batch it
had in flight (results put, checkpoint not written) is processed again by the new owner, so
its results may appear twice on `results` (the prediction log keeps one entry per record; a
reader dedupes results by `shard_id` + `sequence_number`). Balancing and a graceful stop (SIGTERM)
hand leases over after the batch in flight is checkpointed: nothing twice.
The lease table lives in the store: while the store cannot be reached, a consumer starts batches
of its shards only until its leases could expire (0.6 CONSUMER_LEASE_S after the last renewal);
then the shards wait, their records stay on the stream, and nothing is lost.

Per batch (one get_records call per shard): decode every record (raw JSON or base64 of JSON),
validate it against the data contract, predict (one matrix per model), write the prediction-log
records synchronously (store, else spool on disk), put one result per valid record on `results`
and one dead letter per poison record on `predictions-dlq`, and only then checkpoint the shard's
last sequence number in its lease. A restart resumes AFTER_SEQUENCE_NUMBER the checkpoint
(TRIM_HORIZON when there is none), so nothing is lost and at most the last batch is re-emitted;
results and log records carry the input sequence number and log `_id`s are
`stream:<stream creation time, ms>:<shard>:<seq>` with the record's arrival time as `ts`, so a
re-emitted batch does not duplicate anything in the log, and the records of a stream created again
(numbered from 1 again) are not taken for the old stream's. With several shards, up to CONSUMER_THREADS of them are polled at
once (each shard's batches stay in order).

Whatever one record does, the shard moves on:
- Any exception while a record is decoded or validated (invalid JSON, RecursionError from deep
  nesting, non-UTF-8, anything unexpected), or while it alone is predicted, makes it a dead letter
  with its reason. If a batch's prediction fails, its rows are predicted one by one; only when the
  model also fails on the contract's own example is it the model's fault (ModelFailure): then
  nothing is emitted, the checkpoint stays, and the shard retries the batch with capped
  exponential backoff until a working model is loaded (a reload is followed within 2 s).
- Dead-letter entries are bounded (serving.deadletter): the payload is kept up to
  DLQ_PREVIEW_BYTES, larger ones truncated with their size and SHA-256 and, with DLQ_S3_PAYLOADS,
  stored whole under s3://<BUCKET>/dead-letter/ and referenced.
- put_records retries failed entries and transient errors STREAM_PUT_RETRIES times with backoff;
  what is still not taken goes to the outbox on disk (serving.outbox), the checkpoint moves on,
  and no shard is read until the outbox is sent: no result is lost. Delivery on `results` is
  at least once (a crash between a put and the outbox rewrite, or a SIGKILL between a put and the
  checkpoint, re-sends; readers drop repeats by shard_id + sequence_number); the log has each
  prediction once. An entry
  Kinesis refuses for itself (ValidationException) is set aside in the outbox's `rejected/`. If
  the outbox cannot be written, the consumer stops (StreamHalt) rather than loop.
- Any error of a poll (endpoint unreachable, throttling, 5xx, timeouts) is logged and retried
  after a capped exponential backoff (STREAM_BACKOFF_MAX_S); the run loop never dies from one.

Checkpoints belong to one stream (serving.checkpoint): each stores the stream's ARN and creation
time. At start (and when the stream is found created again), a checkpoint of another stream, or
with a sequence number outside the shard's range, or (bare numbers written by older versions)
whose record is not in the shard, is logged as a warning, counted in
`churn_stream_checkpoints_discarded_total` and discarded: the shard is read from TRIM_HORIZON.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from churnops.aws import backoff_delay, client, is_transient
from churnops.cli import fail, setup_logging
from churnops.contract import load_contract
from churnops.model_line import resolved
from churnops.monitoring.rejections import RejectionCounter
from churnops.redact import redact
from churnops.registry import bound_mlflow_http
from churnops.settings import Settings, get_settings, quiet_process
from churnops.store.base import SHARD_END, PredictionStore
from churnops.store.factory import open_store
from serving.checkpoint import Checkpoint, StreamIdentity, fit
from serving.consumer_metrics import serve_metrics
from serving.deadletter import KINESIS_RECORD_LIMIT, build_entry, encode_entry
from serving.image_stream import ImageProcessor
from serving.leases import LeaseCoordinator, LeaseLoop
from serving.metrics import get_metrics
from serving.model import ModelManager
from serving.outbox import Outbox
from serving.prediction_log import PredictionLog
from serving.shadow import ShadowMirror
from serving.slots import claim
from serving.stream_records import (  # noqa: F401  (ModelFailure, decode_payload: re-exported, their old home)
    BatchOutcome,
    ModelFailure,
    RecordProcessor,
    decode_payload,
)
from serving.stream_tabular import TabularProcessor
from serving.tasks import image_contract

log = logging.getLogger(__name__)

PUT_MAX_RECORDS = 500  # put_records: at most 500 entries ...
PUT_MAX_BYTES = 4 * 1024 * 1024  # ... and 5 MiB per call (kept under it)
ENTRY_REJECTED = ("ValidationException", "InvalidArgumentException")  # the entry itself, not the stream's state


class StreamHalt(RuntimeError):
    """The consumer cannot go on without losing or re-emitting results (the outbox cannot be written)."""


@dataclass
class ShardState:
    shard_id: str
    iterator: str | None
    last_seq: str | None
    failures: int = 0  # batches in a row that failed (model down, log spool failing)
    not_before: float = 0.0  # monotonic time before which the shard is not polled again
    lease: object = None  # the serving.leases.Held it was started under (taken again: started again)


class Consumer:
    def __init__(
        self,
        settings: Settings | None = None,
        store: PredictionStore | None = None,
        models: ModelManager | None = None,
        kinesis=None,
        s3=None,
    ):
        self.s = resolved(settings or get_settings())  # the data set's model line
        self.metrics = get_metrics()
        # image serving hook (serving/tasks.py, serving/image_stream.py): image_uri records, no tabular contract
        self.image = image_contract(self.s)
        self.contract = load_contract(self.s.dataset) if self.image is None else None
        self.store = store or open_store(self.s)
        # records refused, counted by reason and field into the line's store (the window's data quality)
        self.rejections = RejectionCounter(self.store, self.contract.feature_names if self.contract else ())
        self.plog = PredictionLog(
            self.store,
            self.s.state_path(self.s.spool_dir, "spool"),
            self.s.log_batch_size,
            self.s.log_flush_interval_s,
            metrics=self.metrics,
            spool_max_bytes=self.s.spool_max_bytes,
            retry_max_s=self.s.log_retry_max_s,
        )
        self.models = models or ModelManager(self.s, metrics=self.metrics)
        # SHADOW_FRACTION > 0: the champion's records mirrored to the candidate after their results are
        # put (serving/shadow.py: the HTTP API's queue and worker; never in the way of a result or checkpoint)
        self.shadow = ShadowMirror(
            self.s, self.plog, self.metrics, lambda: self.models.current, write=self.plog.write_now
        )
        self.kin = kinesis or client("kinesis", self.s, max_attempts=4)
        self._s3 = s3
        # one folder per consumer slot, claimed by a file lock: consumers sharing a state folder never
        # send each other's entries (CONSUMER_INDEX is the first slot tried)
        self.slot = claim(self.s.state_path(self.s.stream_outbox_dir, "outbox"), self.s.consumer_index)
        self.outbox = Outbox(self.slot.folder)
        self.worker_id = self.s.consumer_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.leases: LeaseCoordinator | None = None  # made once the stream's identity is known
        self._lease_loop: LeaseLoop | None = None
        self.max_dlq_entry = min(KINESIS_RECORD_LIMIT - 4096, max(8192, 2 * self.s.dlq_preview_bytes + 16_384))
        self.identity: StreamIdentity | None = None
        self.shards: dict[str, ShardState] = {}
        self._shard_info: dict[str, dict] = {}
        self.stopping = False
        self.processed = 0
        self.dead = 0
        self.discarded_checkpoints = 0
        self._pending_checkpoints: dict[str, Checkpoint] = {}
        self._last_shard_refresh = -math.inf
        self._outbox_failures = 0
        self._outbox_not_before = 0.0
        self._lock = threading.Lock()  # counters and pending checkpoints, shared by shard threads
        self._pool: ThreadPoolExecutor | None = None
        # what turns a batch into results and dead letters (serving/stream_records.py)
        self.processor: RecordProcessor = (
            TabularProcessor(self, self.contract) if self.image is None else ImageProcessor(self, self.image)
        )

    @property
    def validator(self):
        """The tabular processor's record validator (None on an image stream); settable, for tests."""
        return getattr(self.processor, "validator", None)

    @validator.setter
    def validator(self, fn) -> None:
        self.processor.validator = fn

    # ---- shards and checkpoints ------------------------------------------------------------------------
    def checkpoint_key(self, shard_id: str) -> str:
        """The key of the shard's checkpoint in the store's older per-shard table (read once, when the
        shard's lease is created, so that an upgraded consumer resumes where the old one stopped)."""
        return f"kinesis:{self.s.input_stream}:{shard_id}"

    def lease_prefix(self) -> str:
        """Lease keys of this stream incarnation: `kinesis:<stream>:<created, ms>:`."""
        created = round(self.identity.created * 1000) if self.identity is not None else 0
        return f"kinesis:{self.s.input_stream}:{created}:"

    def list_shards(self) -> list[dict]:
        """Every shard of the input stream (open and closed), as list_shards gives them."""
        shards, token = [], None
        while True:
            kw = {"NextToken": token} if token else {"StreamName": self.s.input_stream}
            resp = self.kin.list_shards(**kw)
            shards += resp["Shards"]
            token = resp.get("NextToken")
            if not token:
                break
        self._shard_info = {sh["ShardId"]: sh for sh in shards}
        return shards

    def my_shards(self) -> list[str]:
        """The shards whose leases this consumer holds now."""
        return sorted(self.leases.held_now()) if self.leases is not None else []

    def _discard(self, shard_id: str, ck: Checkpoint, code: str, why: str) -> None:
        log.warning("shard %s: checkpoint %s discarded, reading from TRIM_HORIZON: %s", shard_id, ck.seq, why)
        self.metrics.stream_checkpoints_discarded.labels(code).inc()
        with self._lock:
            self.discarded_checkpoints += 1
            self._pending_checkpoints.pop(shard_id, None)
        if self.leases is not None:  # the one write that may go back: a checkpoint that is not this stream's
            try:
                self.leases.checkpoint(shard_id, None, None, backwards_ok=True)
            except Exception as exc:
                log.warning("shard %s: discarded checkpoint not cleared (%s)", shard_id, exc)

    def _stored_checkpoint(self, shard_id: str) -> Checkpoint | None:
        """This process's newest checkpoint of the shard, else the store's (None when there is none)."""
        ck = self._pending_checkpoints.get(shard_id)
        if ck is not None:
            return ck
        try:
            raw = self.leases.stored_checkpoint(shard_id) if self.leases is not None else None
        except Exception as exc:  # store down: resume from what this process already did, else start
            log.warning("checkpoint read failed (%s); resuming from memory", exc)
            st = self.shards.get(shard_id)
            return self._make_checkpoint(shard_id, st.last_seq) if st and st.last_seq else None
        if raw is None or raw == SHARD_END:
            return None
        try:
            return Checkpoint.decode(raw)
        except ValueError as exc:
            self._discard(shard_id, Checkpoint("?"), "invalid", str(exc))
            return None

    def _iterator(self, shard_id: str) -> tuple[str, str | None]:
        """A shard iterator after the checkpoint when it fits this stream and shard, else at TRIM_HORIZON."""
        from botocore.exceptions import ClientError

        ck = self._stored_checkpoint(shard_id)
        if ck is not None and self.identity is not None:
            try:
                why = fit(
                    ck,
                    self.identity,
                    self._shard_info.get(shard_id, {"ShardId": shard_id}),
                    self.kin,
                    self.s.input_stream,
                )
            except ClientError as exc:  # real Kinesis refuses a sequence number of another shard or stream
                if exc.response.get("Error", {}).get("Code") != "InvalidArgumentException":
                    raise
                why = ("not_in_shard", f"Kinesis refuses it: {exc}")
            if why:
                self._discard(shard_id, ck, *why)
                ck = None
        if ck is not None:
            try:
                it = self.kin.get_shard_iterator(
                    StreamName=self.s.input_stream,
                    ShardId=shard_id,
                    ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                    StartingSequenceNumber=ck.seq,
                )
                return it["ShardIterator"], ck.seq
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "InvalidArgumentException":
                    raise
                self._discard(shard_id, ck, "not_in_shard", f"Kinesis refuses it: {exc}")
        it = self.kin.get_shard_iterator(
            StreamName=self.s.input_stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )
        return it["ShardIterator"], None

    def refresh_shards(self) -> None:
        """Read the stream's identity and shards; start new shards at their checkpoint (or TRIM_HORIZON).

        A stream deleted and created again under the same name (new creation time) drops every
        shard's state: its sequence numbers start anew, nothing of the old stream applies."""
        ident = StreamIdentity.describe(self.kin, self.s.input_stream)
        if self.identity is not None and ident != self.identity:
            log.warning(
                "stream %s was created again (%s, created %s); dropping the old stream's shard positions",
                self.s.input_stream,
                ident.arn,
                ident.created,
            )
            with self._lock:
                self.shards.clear()
                self._pending_checkpoints.clear()
        self.identity = ident
        if self.leases is None or self.leases.prefix != self.lease_prefix():
            self.leases = LeaseCoordinator(self.store, self.lease_prefix(), self.worker_id, self.s.consumer_lease_s)
        self.leases.sync_shards(self.list_shards(), self._legacy_checkpoint)
        self.leases.tick()  # at once (the lease loop ticks every third of a lease duration)
        self.sync_owned()
        self._last_shard_refresh = time.monotonic()

    def _legacy_checkpoint(self, shard_id: str) -> str | None:
        try:
            return self.store.get_checkpoint(self.checkpoint_key(shard_id))
        except Exception as exc:
            log.warning("shard %s: older checkpoint not read (%s)", shard_id, exc)
            return None

    def sync_owned(self) -> None:
        """Start the shards whose leases this consumer holds now (at their checkpoint) and forget the others."""
        held = self.leases.held_now() if self.leases is not None else {}
        for sh, st in list(self.shards.items()):
            if held.get(sh) is not st.lease:
                with self._lock:
                    self.shards.pop(sh, None)
                    self._pending_checkpoints.pop(sh, None)
                log.info("shard %s: no longer this consumer's", sh)
        for sh in sorted(set(held) - set(self.shards)):
            if sh not in self._shard_info:
                self._last_shard_refresh = -math.inf  # a shard this consumer has not listed yet
                continue
            it, seq = self._iterator(sh)
            self.shards[sh] = ShardState(sh, it, seq, lease=held[sh])
            log.info("shard %s: %s", sh, f"resuming after {seq}" if seq else "from TRIM_HORIZON")

    def _make_checkpoint(self, shard_id: str, seq: str) -> Checkpoint:
        ident = self.identity
        start = (self._shard_info.get(shard_id, {}).get("SequenceNumberRange") or {}).get("StartingSequenceNumber")
        return Checkpoint(seq, ident.arn if ident else None, ident.created if ident else None, start)

    def _checkpoint(self, shard_id: str, ck: Checkpoint | str) -> bool:
        """Write the shard's checkpoint into its lease (and any still pending); False when the lease
        refused it (lost to another consumer, or backwards): the shard is dropped, nothing more of it
        is processed. A store error keeps it in memory, written once the store is back."""
        if isinstance(ck, str):
            ck = self._make_checkpoint(shard_id, ck)
        refused = False
        with self._lock:
            self._pending_checkpoints[shard_id] = ck
            try:
                for sh, c in list(self._pending_checkpoints.items()):
                    ok = self.leases is not None and self.leases.checkpoint(sh, c.encode(), c.seq)
                    del self._pending_checkpoints[sh]
                    if not ok:
                        self.shards.pop(sh, None)
                        refused = refused or sh == shard_id
            except Exception as exc:  # kept in memory; written once the store is back
                log.warning("checkpoint write failed (%s); will retry", exc)
        return not refused

    # ---- output -------------------------------------------------------------------------------------------
    def _put_all(self, stream: str, entries: list[dict]) -> list[dict]:
        """put_records in chunks (500 entries, 4 MiB), retrying failed entries and transient errors with
        capped exponential backoff, STREAM_PUT_RETRIES times. Returns the entries still not taken; an
        entry Kinesis refuses for itself goes to the outbox's `rejected/` (logged, counted)."""
        left: list[dict] = []
        chunk: list[dict] = []
        size = 0
        for e in entries:
            n = len(e["Data"]) + len(e["PartitionKey"].encode())
            if chunk and (len(chunk) == PUT_MAX_RECORDS or size + n > PUT_MAX_BYTES):
                left += self._put_chunk(stream, chunk)
                chunk, size = [], 0
            chunk.append(e)
            size += n
        if chunk:
            left += self._put_chunk(stream, chunk)
        return left

    def _put_chunk(self, stream: str, todo: list[dict]) -> list[dict]:
        from botocore.exceptions import ClientError

        retries = max(0, self.s.stream_put_retries)
        for attempt in range(retries + 1):
            if attempt:
                self.metrics.stream_retries.labels("put_records").inc()
                time.sleep(backoff_delay(attempt, 0.1, min(2.0, self.s.stream_backoff_max_s)))
            try:
                resp = self.kin.put_records(StreamName=stream, Records=todo)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ENTRY_REJECTED:
                    if len(todo) > 1:  # find the entry it is about: the others go out
                        return [e for one in todo for e in self._put_chunk(stream, [one])]
                    log.error(
                        "put_records to %s refused an entry for good (%s); kept in %s",
                        stream,
                        exc,
                        self.outbox.dir / "rejected",
                    )
                    self.outbox.reject(stream, todo[0], str(exc))
                    self.metrics.stream_records.labels("rejected").inc()
                    return []
                if not is_transient(exc):
                    log.warning("put_records to %s failed (%s)", stream, exc)
                    return todo
                log.warning("put_records to %s failed (%s); retrying", stream, exc)
                continue
            except Exception as exc:
                if not is_transient(exc):
                    log.warning("put_records to %s failed (%s: %s)", stream, type(exc).__name__, exc)
                    return todo
                log.warning("put_records to %s failed (%s: %s); retrying", stream, type(exc).__name__, exc)
                continue
            if not resp.get("FailedRecordCount"):
                return []
            todo = [e for e, r in zip(todo, resp["Records"]) if r.get("ErrorCode")]
        log.warning(
            "put_records to %s: %d entr%s not taken after %d retries",
            stream,
            len(todo),
            "y" if len(todo) == 1 else "ies",
            retries,
        )
        return todo

    def emit(self, stream: str, entries: list[dict]) -> None:
        """Put `entries` on `stream`; what is not taken within the retries waits in the outbox on disk."""
        left = self._put_all(stream, entries) if entries else []
        if not left:
            return
        try:
            path = self.outbox.add(stream, left)
        except OSError as exc:
            raise StreamHalt(
                f"{len(left)} entries for stream {stream} could neither be put nor kept in "
                f"{self.outbox.dir} ({exc}); stopping so that none is lost or emitted twice"
            ) from exc
        self.metrics.stream_records.labels("outbox").inc(len(left))
        log.warning("%d entries for %s kept in %s; the shards wait until they are sent", len(left), stream, path)

    def drain_outbox(self) -> bool:
        """Send what waits in the outbox (with backoff between tries); True when it is empty."""
        if not self.outbox.files():
            return True
        if time.monotonic() < self._outbox_not_before:
            return False
        sent, left = self.outbox.drain(self._put_all)
        if left:
            self._outbox_failures += 1
            delay = backoff_delay(self._outbox_failures, 0.5, self.s.stream_backoff_max_s)
            self._outbox_not_before = time.monotonic() + delay
            log.warning("outbox: %d entries still waiting (sent %d); next try in %.1f s", left, sent, delay)
            return False
        self._outbox_failures = 0
        log.info("outbox drained (%d entries sent)", sent)
        return True

    # ---- one batch ------------------------------------------------------------------------------------------
    def log_id(self, shard_id: str, seq: str) -> str:
        """The log `_id` of a record: `stream:<stream creation, ms>:<shard>:<seq>`. The same for a re-emitted
        batch; another for a stream created again under the same name, whose numbers start anew."""
        created = round(self.identity.created * 1000) if self.identity is not None else 0
        return f"stream:{created}:{shard_id}:{seq}"

    def _s3_client(self):
        if self._s3 is None and self.s.dlq_s3_payloads:
            self._s3 = client("s3", self.s, max_attempts=2, connect_timeout=2, read_timeout=10)
        return self._s3

    def dead_letter(self, shard_id: str, rec: dict, reason: str, code: str, details: object) -> dict:
        """The dead-letter entry of one record, as a put_records entry (bounded size; never raises)."""
        seq = str(rec.get("SequenceNumber"))
        data = rec.get("Data")
        data = data if isinstance(data, bytes) else str(data).encode("utf-8", "backslashreplace")
        try:
            entry = build_entry(
                data=data,
                reason=reason,
                reason_code=code,
                details=details,
                stream=self.s.input_stream,
                shard_id=shard_id,
                sequence_number=seq,
                partition_key=rec.get("PartitionKey"),
                preview_bytes=self.s.dlq_preview_bytes,
                s3=self._s3_client() if len(data) > self.s.dlq_preview_bytes else None,
                bucket=self.s.bucket,
            )
            body = encode_entry(entry, self.max_dlq_entry)
        except Exception as exc:  # the entry of last resort: coordinates and reason only
            log.error("dead letter %s/%s: entry not built (%s: %s)", shard_id, seq, type(exc).__name__, exc)
            body = json.dumps(
                {
                    "reason": str(reason)[:500],
                    "reason_code": str(code)[:100],
                    "shard_id": shard_id,
                    "sequence_number": seq,
                    "payload_bytes": len(data),
                    "ts": time.time(),
                },
                default=str,
            ).encode("utf-8", "backslashreplace")
        return {"Data": body, "PartitionKey": seq[-64:] or "0"}

    def process(self, shard_id: str, records: list[dict]) -> tuple[int, int]:
        """Handle one get_records batch; returns (results, dead letters).

        The processor (tabular or image) makes each record a result or a dead letter; the log is
        written before anything is put on a stream, so a failure before the puts (ModelFailure, a log
        spool that cannot be written) emits nothing."""
        return self.commit(self.processor.process(shard_id, records))

    def commit(self, out: BatchOutcome) -> tuple[int, int]:
        """Log a batch's predictions (stored or spooled, else NotLogged), then put its results and dead
        letters; returns their counts."""
        if out.logs:
            self.plog.write_now(out.logs).check()  # stored or spooled before any put or checkpoint
        self.emit(self.s.output_stream, out.results)
        self.emit(self.s.dlq_stream, out.dead)
        self.offer_shadow(out)
        self.rejections.flush()  # the window's data quality: only when records were refused
        self.metrics.stream_records.labels("result").inc(len(out.results))
        self.metrics.stream_records.labels("dead_letter").inc(len(out.dead))
        with self._lock:
            self.processed += len(out.results)
            self.dead += len(out.dead)
        return len(out.results), len(out.dead)

    def offer_shadow(self, out: BatchOutcome) -> None:
        """Offer the batch's champion rows to the shadow candidate (sampled; a non-blocking put; never raises)."""
        if out.mirror is None or not self.shadow.enabled:
            return
        try:
            self.shadow.offer_sampled(out.mirror)
        except Exception as exc:  # shadow never holds up a result or a checkpoint
            log.warning("shadow mirror not offered: %s", redact(f"{type(exc).__name__}: {exc}")[:300])

    # ---- loop -------------------------------------------------------------------------------------------------
    def poll_once(self) -> int:
        """One get_records per owned shard (several shards at once); returns how many input records were
        handled. While entries wait in the outbox, no shard is read (they are sent first)."""
        if time.monotonic() - self._last_shard_refresh > 30:
            self.refresh_shards()
        elif self.leases is not None:
            if self._lease_loop is None:
                self.leases.tick_if_due()
            self.sync_owned()
        if not self.drain_outbox():
            return 0
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
        for sh, st in list(self.shards.items()):  # closed shards whose SHARD_END could not be written yet
            if st.iterator is None:
                self._finish(sh)
        if not self.plog.store_ok or self.plog.spool_files():
            self.plog.maybe_replay()
        return handled

    def _poll_shard(self, sh: str, st: ShardState) -> int:
        """get_records on one shard, process the batch, checkpoint; returns how many records were handled."""

        if self.stopping or time.monotonic() < st.not_before or self.leases is None:
            return 0
        with self.leases.processing(sh) as mine:
            return self._poll_held_shard(sh, st) if mine else 0

    def _poll_held_shard(self, sh: str, st: ShardState) -> int:
        """`_poll_shard` while the shard's lease is held (no hand-off meanwhile)."""
        from botocore.exceptions import ClientError

        try:
            resp = self.kin.get_records(ShardIterator=st.iterator, Limit=min(10_000, self.s.consumer_batch_size))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("ExpiredIteratorException", "InvalidArgumentException"):
                log.info("shard %s: iterator %s; renewing from the checkpoint", sh, code)
                st.iterator, _ = self._iterator(sh)
                return 0
            if code in ("ProvisionedThroughputExceededException", "LimitExceededException"):
                self.metrics.stream_retries.labels("get_records").inc()
                st.not_before = time.monotonic() + 0.5
                return 0
            raise
        records = resp.get("Records", [])
        self.metrics.stream_lag.labels(sh).set(float(resp.get("MillisBehindLatest") or 0) / 1000.0)
        handled = 0
        if records:
            try:
                self.process(sh, records)
            except StreamHalt:
                raise
            except Exception as exc:  # nothing was put yet: retry this batch from the checkpoint, later
                st.failures += 1
                delay = backoff_delay(st.failures, 0.5, self.s.stream_backoff_max_s)
                st.not_before = time.monotonic() + delay
                self.metrics.stream_retries.labels("batch").inc()
                log.warning(
                    "shard %s: batch failed (%s: %s); retrying from the checkpoint in %.1f s",
                    sh,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                st.iterator, _ = self._iterator(sh)
                return 0
            st.failures = 0
            st.last_seq = records[-1]["SequenceNumber"]
            if not self._checkpoint(sh, st.last_seq):
                return len(records)  # the lease is gone: not one more batch of this shard
            handled = len(records)
        st.iterator = resp.get("NextShardIterator")
        if st.iterator is None:
            log.info("shard %s closed and read to its end", sh)
            self._finish(sh)
        return handled

    def _finish(self, sh: str) -> None:
        """A closed shard read to its end: SHARD_END in its lease (once its last checkpoint is written)
        and the lease released, so that its children may start."""
        if sh in self._pending_checkpoints:
            return  # the store is away: poll_once tries again
        if self.leases is not None and self.leases.finish(sh):
            with self._lock:
                self.shards.pop(sh, None)
            self._last_shard_refresh = -math.inf  # list the children and create their leases

    def _lease_tick(self) -> None:
        if self.leases is not None:
            self.leases.tick()

    def wait_for_model(self) -> None:
        delay = 1.0
        while self.models.current is None and not self.stopping:
            try:
                self.models.load_initial()
            except Exception as exc:
                log.warning("model not loaded yet (%s); retrying in %.0f s", redact(exc), delay)
                time.sleep(delay)
                delay = min(delay * 1.5, 30)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))

    def run(self, max_idle_polls: int | None = None) -> None:
        """Consume until SIGTERM/SIGINT (or `max_idle_polls` empty or failed polls in a row with nothing in
        the outbox, for tests/bench).

        An error of a poll (endpoint unreachable, throttling, 5xx, timeouts, a stream being created again)
        is logged and retried after a capped exponential backoff; only StreamHalt ends the loop."""
        self.wait_for_model()
        if self.stopping:
            return
        idle = failures = 0
        try:
            self.refresh_shards()
        except Exception as exc:  # the loop below tries again
            log.warning("shards not listed yet (%s: %s)", type(exc).__name__, exc)
        self._lease_loop = LeaseLoop(self._lease_tick, self.s.consumer_lease_s / 3).start()
        last_follow = time.monotonic()
        try:
            while not self.stopping:
                try:
                    n = self.poll_once()
                    if time.monotonic() - last_follow > 2:
                        self.models.follow_state()
                        last_follow = time.monotonic()
                    failures = 0
                except StreamHalt:
                    raise
                except Exception as exc:
                    failures += 1
                    delay = backoff_delay(failures, 0.2, self.s.stream_backoff_max_s)
                    self.metrics.stream_retries.labels("poll").inc()
                    if is_transient(exc):
                        log.warning("stream poll failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                    else:
                        log.error("stream poll failed; retrying in %.1f s", delay, exc_info=True)
                    self._last_shard_refresh = -math.inf  # read the stream and its shards again
                    n = 0
                    self._sleep(delay)
                if n == 0 and not failures and self.outbox.files():  # waiting to send, not idle
                    self._sleep(max(self.s.consumer_poll_interval_s, self._outbox_not_before - time.monotonic()))
                elif n == 0:
                    idle += 1
                    if max_idle_polls is not None and idle >= max_idle_polls:
                        break
                    if not failures:
                        time.sleep(self.s.consumer_poll_interval_s)
                else:
                    idle = 0
        finally:
            self._lease_loop.stop()
            self._lease_loop = None
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            self.shadow.stop()  # what is mirrored so far is logged before the log closes (bounded wait)
            self.plog.close()
            if self._pending_checkpoints:
                self._checkpoint(*next(iter(dict(self._pending_checkpoints).items())))
            if self.leases is not None:
                self.leases.release_all()  # others take the shards at once, not after the leases expire
            log.info(
                "consumer stopped: %d results, %d dead letters, %d in the outbox",
                self.processed,
                self.dead,
                self.outbox.count(),
            )

    def install_signal_handlers(self) -> None:
        def stop(signum, frame):
            log.info("signal %s: finishing the current batch", signum)
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)


def main() -> None:
    quiet_process()  # before the model loader first imports mlflow
    setup_logging()
    s = get_settings()
    bound_mlflow_http(s)
    try:
        c = Consumer(s)
        c.install_signal_handlers()
        serve_metrics(s, c.outbox)  # /metrics on its own port; a failure to bind is logged, never fatal
        log.info(
            "consumer %s (outbox slot %d, leases of %.1f s) on %s -> %s (dlq %s)",
            c.worker_id,
            c.slot.index,
            s.consumer_lease_s,
            s.input_stream,
            s.output_stream,
            s.dlq_stream,
        )
        c.run()
    except Exception as exc:
        fail(exc, f"stream consumer on {s.input_stream} at {s.aws_endpoint_url}")


if __name__ == "__main__":
    main()
