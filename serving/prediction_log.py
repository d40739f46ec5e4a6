"""Writes to the prediction log, off the request path, losing nothing a client was told about.

One `PredictionLog` per process. `submit()` (request thread) does two things under one short
lock: it appends the encoded record to this process's journal segment with ONE `os.write`
(`<spool>/<ns>-<pid>-<n>.journal`, opened O_APPEND), and it queues the record in memory. A
background thread wakes every `flush_interval_s` (or at `wake_records` queued records), starts a
new segment, writes what was queued to the store (`batch_size` records per call), and then
deletes the old segment: everything in it is in the store.

Durability: a record is in the journal before its HTTP answer is sent. `os.write` returns once
the bytes are in the kernel's page cache, so a killed process (SIGKILL, OOM killer, a crash of
the worker) loses nothing: its segments are no longer locked (see below) and any process sharing
the spool folder (a sibling worker, the replacement worker, gunicorn's master on `child_exit`)
turns them into spool files and replays them. The journal is not fsync'ed per request: a crash of
the machine or the kernel (power loss) can lose the records of the last seconds (the segments not
yet written back by the kernel); spool files are fsync'ed when they are made.

While the store is down (a write failed with an error the store calls `is_unavailable`): records
are only journaled (nothing more is queued in memory) and each segment becomes a spool file
(`*.jsonl`) when it ends; records that were only in memory (the journal could not be written)
are written to a spool file (fsync'ed). The store is retried with exponential backoff (from
`replay_interval_s` up to `retry_max_s`) by replaying the spool; a replay is idempotent because
records keep their `_id` and stores keep the first write of each.

Bounds: the in-memory queue holds at most `queue_max_records` records (beyond it a journaled
record is left to the journal, which is then replayed); the spool folder at most
`spool_max_bytes` (journal segments and spool files of every process together). A record that
fits in neither, or that could not be journaled (disk full) while the store is down, is dropped
and counted (`dropped`, metric `churn_prediction_log_records_total{outcome="dropped"}`, `/health`).

What is an error of the records and what is the store's: only an error the store's
`is_record_error` claims (one record too large, not encodable, breaking a key or a constraint)
is about the records. Such a write is bisected down to the records that cause it, which go to
the quarantine (serving.quarantine: counted, capped, files 0600, fsync'ed, replayed by
`make replay-quarantine`), so one bad record never fails its neighbours and never marks the
store down. Every other error (MongoDB refusing the credentials or out of disk, SQLite locked,
full or "malformed", a network error, an error nobody classified) is the store being unavailable:
one call, no bisection, the records are spooled, the store is retried with backoff and /health
is degraded with the store's name and the error (secrets redacted). `written` counts only the
records the store took.

`write_now` (the stream consumer) answers what happened to each record (`Written`): a caller that
must not go on with records neither stored, spooled nor quarantined calls `.check()`, which raises
`NotLogged` (the consumer then emits nothing and keeps its checkpoint: the shard retries).

Ownership: a process holds an exclusive `flock` on every file it is writing or replaying (its
journal segments, `.tmp` files, `.replaying-<pid>` claims). A file whose lock can be taken has no
live owner, whatever its name says (pids are reused: pid 1 in every container), and is reclaimed.
"""

from __future__ import annotations

import atexit
import collections
import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from churnops.redact import redact
from churnops.store.base import PredictionBatch, is_record_error
from churnops.store.base import feedback_outcome as _outcome
from churnops.store.encoding import dump_document
from churnops.store.protocols import PredictionRecords
from serving.quarantine import Quarantine, ReplayResult

log = logging.getLogger(__name__)

PREDICTION, FEEDBACK, BATCH = "prediction", "feedback", "batch"
DROP_ALERT_S = 600.0  # /health stays `degraded` this long after a record was dropped
ENCODED = "encoded"  # a prediction already encoded by the store: (ts, JSON bytes)
EBATCH = "encoded-batch"  # a batch with its columns encoded by the store: (PredictionBatch, JSON bytes)
_MARK = "segment-end"  # queue marker: every item before it is handled, its segment can go


def _describe_error(exc: BaseException) -> str:
    """An error's message, with the code of a driver error that has one (MongoDB's OperationFailure)."""
    code = getattr(exc, "code", None)
    msg = str(exc)[:250]
    return f"code {code}: {msg}" if isinstance(code, int) else msg


def _size(item: tuple) -> int:
    kind = item[0]
    if kind == BATCH:
        return item[1].n
    if kind == EBATCH:
        return item[1][0].n
    return 0 if kind == _MARK else 1


class StoreUnavailable(Exception):
    """The store is down (as opposed to refusing one record)."""


class NotLogged(RuntimeError):
    """Some records were neither stored, spooled nor quarantined (store down and spool full)."""


@dataclass(frozen=True)
class Written:
    """What `write_now` did with the records it was given (each counted once)."""

    stored: int = 0
    spooled: int = 0
    quarantined: int = 0
    dropped: int = 0

    def __bool__(self) -> bool:
        """True when the store took every record (what `write_now` returned before)."""
        return self.spooled == 0 and self.dropped == 0 and self.quarantined == 0

    @property
    def kept(self) -> bool:
        """Every record is in the store, the spool or the quarantine (nothing dropped)."""
        return self.dropped == 0

    def check(self) -> "Written":
        """Raise NotLogged when a record was dropped; else self."""
        if self.dropped:
            raise NotLogged(
                f"{self.dropped} prediction-log record(s) could be neither stored nor spooled "
                "(store unavailable and spool full or unwritable)"
            )
        return self


class _Segment:
    """One journal file of this process (held open and flock'ed until its records are handled)."""

    __slots__ = ("path", "fd", "bytes", "records", "dirty", "closed")

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd
        self.bytes = self.records = 0
        self.dirty = False  # some record in it did not reach the store: it becomes a spool file
        self.closed = False


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on `path`; None when another open file holds it (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _create_locked(path: Path, append: bool = False) -> int:
    """A new file at `path`, write-only, already flock'ed when it appears under that name (created
    as `<path>.new` and renamed, so that no reclaimer ever sees it unlocked)."""
    new = path.with_name(path.name + ".new")
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | (os.O_APPEND if append else 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(new, path)
    except BaseException:
        os.close(fd)
        try:
            new.unlink()
        except OSError:
            pass
        raise
    return fd


def _fsync_dir(d: Path) -> None:
    try:
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def reclaim_orphans(spool_dir: str | Path) -> int:
    """Journal segments and replay claims nobody holds become spool files again; `.tmp` files
    nobody holds are deleted (incomplete by construction). Returns how many files were reclaimed.
    Safe to call from any process at any time (gunicorn's master calls it when a worker dies)."""
    d = Path(spool_dir)
    if not d.is_dir():
        return 0
    n = 0
    for p in d.glob("*.new"):  # a process died between creating and naming a file (empty)
        try:
            if time.time() - p.stat().st_mtime > 60:
                p.unlink()
        except OSError:
            pass
    for p in list(d.glob("*.journal")) + list(d.glob("*.replaying-*")) + list(d.glob("*.tmp")):
        fd = _try_lock(p)
        if fd is None:
            continue
        try:
            if p.suffix == ".tmp":
                p.unlink()
            else:
                stem = p.name.split(".replaying-")[0] if ".replaying-" in p.name else p.stem
                os.rename(p, p.with_name(stem + ".jsonl"))
                n += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    if n:
        _fsync_dir(d)
        log.info("reclaimed %d orphaned journal/spool file(s) in %s", n, d)
    return n


def _line(kind: str, record) -> bytes | None:
    """One spool/journal line; None when the record cannot be encoded (it then stays in memory)."""
    try:
        if kind == ENCODED:
            return b'{"kind":"prediction","record":' + record[1] + b"}\n"
        if kind == EBATCH:
            return b'{"kind":"batch","record":' + record[1] + b"}\n"
        if kind == BATCH:
            record = {"const": record.const, "cols": record.cols, "features": record.features}
        return dump_document({"kind": kind, "record": record}) + b"\n"
    except Exception:
        return None


def quarantine_line(kind: str, record, reason: str = "") -> str:
    """A quarantine line: ASCII JSON whatever the record holds (lone surrogates included)."""
    if kind == ENCODED:
        kind, record = PREDICTION, record[1].decode("utf-8", "backslashreplace")
    elif kind in (BATCH, EBATCH):
        kind, record = BATCH, (record if kind == BATCH else record[0]).to_doc()
    return json.dumps({"kind": kind, "record": record, "error": reason}, default=str) + "\n"


def parse_line(raw: str | bytes) -> tuple | None:
    """The `(kind, record, None)` item of a spool or quarantine line; None when it is not one (a
    quarantined line that could not be read back, or anything else unreadable)."""
    try:
        d = json.loads(raw)
        kind, rec = d["kind"], d["record"]
        if kind == PREDICTION and isinstance(rec, str):  # a quarantined encoded record: its JSON text
            rec = json.loads(rec)
        if kind == BATCH:
            rec = PredictionBatch.from_doc(rec)
        if kind not in (PREDICTION, FEEDBACK, BATCH) or not isinstance(rec, (dict, PredictionBatch)):
            return None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return kind, rec, None


class PredictionLog:
    def __init__(
        self,
        store: PredictionRecords,
        spool_dir: str | Path,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        replay_interval_s: float = 2.0,
        metrics=None,
        wake_records: int | None = None,
        queue_max_records: int = 100_000,
        spool_max_bytes: int = 1 << 30,
        retry_max_s: float = 30.0,
        journal: bool = True,
        quarantine_max_bytes: int | None = None,
    ):
        self.store = store
        # stores that keep JSON text take records encoded in the request thread (see SQLiteStore)
        self._encode = getattr(store, "encode_prediction", None) if hasattr(store, "insert_encoded") else None
        self._encode_batch = getattr(store, "encode_batch", None) if hasattr(store, "insert_encoded_batch") else None
        self.spool_dir = Path(spool_dir)
        self.batch_size = max(1, int(batch_size))
        # records queued that wake the writer before its interval; every wake-up costs the request
        # thread GIL hand-overs, so servers wake it rarely (see Settings.log_wake_records)
        self.wake_records = self.batch_size if wake_records is None else max(1, int(wake_records))
        self.flush_interval_s = float(flush_interval_s)
        self.replay_interval_s = float(replay_interval_s)
        self.queue_max_records = max(1, int(queue_max_records))
        self.spool_max_bytes = int(spool_max_bytes)
        self.retry_max_s = float(retry_max_s)
        self.journal = journal
        self.metrics = metrics
        # its own cap (an eighth of the spool's by default), and counted inside the spool's
        self.quarantine = Quarantine(
            self.spool_dir / "quarantine",
            self.spool_max_bytes // 8 if quarantine_max_bytes is None else int(quarantine_max_bytes),
        )
        self._q: collections.deque = collections.deque()
        self._queued = 0  # records in the queue (changed under _jlock)
        self._waiting = 0  # records queued since the writer last looked
        self._jlock = threading.Lock()  # journal fd + queue append: one segment boundary = one queue position
        self._drain_lock = threading.Lock()  # one thread drains the queue at a time
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seg: _Segment | None = None
        self._seq = 0
        self._last_replay = 0.0
        self._failed_at = 0.0  # while the store is down: its last failed try
        self._failures = 0  # failed tries since the store last took a write
        self._spool_used = 0  # bytes in the spool folder besides this process's live segment
        self._last_scan = 0.0
        self.store_ok = True
        self.journal_ok = True
        self.spool_full = False
        self.written = 0
        self.spooled = 0
        self.dropped = 0
        self._last_drop = -DROP_ALERT_S
        self.quarantined = 0
        self.last_error = ""
        self.store_error = ""  # the store's last error while it is unavailable (redacted)

    # ---- producer side ---------------------------------------------------------------------------
    def _put(self, item: tuple, n: int = 1) -> None:
        line = _line(item[0], item[1]) if self._seg is not None else None
        with self._jlock:
            seg = self._seg
            if seg is not None:
                seg = self._append(seg, line, n) if line is not None else None
            if seg is not None and (not self.store_ok or self._queued >= self.queue_max_records):
                seg.dirty = True  # left to the journal: replayed from its spool file
                self.spooled += n
                self._count("spooled", n)
                return
            if self._queued >= self.queue_max_records:
                self.dropped += n
                self._last_drop = time.monotonic()
                self._count("dropped", n)
                return
            self._q.append((item[0], item[1], seg))
            self._queued += n
        self._waiting += n
        if self._waiting >= self.wake_records and not self._wake.is_set():
            self._wake.set()

    def _append(self, seg: _Segment, line: bytes, n: int) -> _Segment | None:
        """Journal one line (under _jlock); the segment, or None when it could not be written."""
        if self._spool_used + seg.bytes + len(line) > self.spool_max_bytes:
            if not self.spool_full:
                log.error(
                    "spool folder %s is full (%d bytes, limit %d): records are kept in memory only",
                    self.spool_dir,
                    self._spool_used + seg.bytes,
                    self.spool_max_bytes,
                )
            self.spool_full = True
            return None
        try:
            written = os.write(seg.fd, line)
        except OSError as exc:
            written, err = -1, f"{type(exc).__name__}: {exc}"
        else:
            err = f"short write ({written} of {len(line)} bytes)"
        if written == len(line):
            seg.bytes += written
            seg.records += n
            if not self.journal_ok:
                self.journal_ok = True
            return seg
        # disk full or I/O error: this segment takes no more lines (a torn last line is skipped on
        # replay; the record stays in memory); the writer opens a new segment at its next round
        if self.journal_ok:
            log.error("prediction journal %s: write failed (%s); records are kept in memory only", seg.path, err)
        self.journal_ok = False
        self.last_error = f"journal: {err}"
        seg.dirty = True
        self._seg = None
        self._q.append((_MARK, seg, None))
        self._spool_used += seg.bytes
        return None

    def submit(self, record: dict) -> None:
        if self._encode is not None:
            try:
                self._put((ENCODED, self._encode(record)))
                return
            except Exception:  # an odd record: the writer thread deals with the dict
                pass
        self._put((PREDICTION, record))

    def submit_many(self, records: list[dict]) -> None:
        for r in records:
            self.submit(r)

    def submit_batch(self, batch: PredictionBatch) -> None:
        """A batch request's predictions, in columns (stored as one unit)."""
        if batch.n:
            if self._encode_batch is not None:  # encoded once: for the journal and for the store
                try:
                    self._put((EBATCH, (batch, self._encode_batch(batch))), batch.n)
                    return
                except Exception:
                    pass
            self._put((BATCH, batch), batch.n)

    def submit_feedback(self, request_id: str, outcome: int | float, ts: float) -> None:
        """0/1 outcome of a classifier, or the observed value (float) of a regression."""
        self._put((FEEDBACK, {"request_id": str(request_id), "outcome": _outcome(outcome), "ts": float(ts)}))

    def pending(self) -> int:
        """Records queued in memory and not yet written."""
        return self._queued

    def status(self) -> dict:
        """What /health shows of the log."""
        degraded = [
            k
            for k, bad in (
                ("store", not self.store_ok),
                ("journal", not self.journal_ok),
                ("spool_full", self.spool_full),
                ("dropped", time.monotonic() - self._last_drop < DROP_ALERT_S),
            )
            if bad
        ]
        q_files, q_bytes = self.quarantine.usage()
        return {
            "store": self.store_name(),
            "store_ok": self.store_ok,
            "store_error": "" if self.store_ok else self.store_error,
            "journal_ok": self.journal_ok,
            "spool_full": self.spool_full,
            "pending": self._queued,
            "spooled": self.spooled,
            "dropped": self.dropped,
            "quarantined": self.quarantined,
            "quarantine_files": q_files,
            "quarantine_bytes": q_bytes,
            "quarantine_max_bytes": self.quarantine.max_bytes,
            "spool_bytes": self._spool_used + (self._seg.bytes if self._seg else 0),
            "spool_files": len(self.spool_files()),
            "degraded": degraded,
            "last_error": redact(self.last_error),
        }

    def store_name(self) -> str:
        """The store's own description (e.g. `SQLite /path`, `MongoDB mongodb://***@host database churn`)."""
        try:
            return redact(self.store.describe())
        except Exception:
            return type(self.store).__name__

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "PredictionLog":
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            reclaim_orphans(self.spool_dir)  # e.g. the journal of the worker this one replaces
            self._scan_spool()
            self._rotate()
            self._thread = threading.Thread(target=self._loop, name="prediction-log", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer and write (or spool) everything still queued; end the journal."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._jlock:
            seg, self._seg = self._seg, None
            if seg is not None:
                self._q.append((_MARK, seg, None))
                self._spool_used += seg.bytes
        self._drain()

    def flush(self) -> None:
        """End the current journal segment and write everything queued now, in the calling thread."""
        if self._seg is not None:
            self._rotate()
        self._drain()

    # ---- journal segments -------------------------------------------------------------------------
    def _open_segment(self) -> _Segment | None:
        if not self.journal:
            return None
        self._seq += 1
        path = self.spool_dir / f"{time.time_ns()}-{os.getpid()}-{self._seq}.journal"
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            fd = _create_locked(path, append=True)
        except OSError as exc:
            if self.journal_ok:
                log.error("cannot open a prediction journal in %s (%s)", self.spool_dir, exc)
            self.journal_ok = False
            self.last_error = f"journal: {type(exc).__name__}: {exc}"
            return None
        return _Segment(path, fd)

    def _rotate(self) -> None:
        """Start a new segment; the old one ends where the queue is now (a marker)."""
        new = self._open_segment()
        with self._jlock:
            old, self._seg = self._seg, new
            if old is not None:
                self._q.append((_MARK, old, None))
                self._spool_used += old.bytes  # on disk until its marker is reached

    def _end_segment(self, seg: _Segment) -> None:
        """Every record of `seg` is handled: delete it, or keep it as a spool file when some record
        in it did not reach the store."""
        with self._jlock:
            seg.closed = True
        try:
            if seg.dirty and seg.bytes:
                os.fsync(seg.fd)
                os.rename(seg.path, seg.path.with_suffix(".jsonl"))
                _fsync_dir(self.spool_dir)
            else:
                seg.path.unlink()
                self._spool_used = max(0, self._spool_used - seg.bytes)
        except OSError as exc:
            log.error("ending journal segment %s failed (%s)", seg.path, exc)
        finally:
            os.close(seg.fd)

    # ---- writing ----------------------------------------------------------------------------------
    def write_now(self, items: list) -> Written:
        """Write items synchronously (store, else spool); returns what happened to them (`Written`:
        true when the store took all; `.check()` raises NotLogged when some were dropped).

        Items are `(kind, record)` pairs, bare prediction dicts or `PredictionBatch`es. Never raises
        for a store error. While the store is down it is not tried before its backoff runs out.
        """
        items = [
            (i[0], i[1], None)
            if isinstance(i, tuple)
            else (BATCH, i, None)
            if isinstance(i, PredictionBatch)
            else (PREDICTION, i, None)
            for i in items
        ]
        if not items:
            return Written()
        res = self._write(items)
        if res.stored:
            self.maybe_replay()
        return res

    def _write(self, items: list[tuple]) -> Written:
        """Store `items` (isolating records the store refuses), else keep them on disk."""
        if not self.store_ok and time.monotonic() < self.retry_at():
            return self._defer(items)
        try:
            with self._write_lock:
                refused = self._store_isolating(items)
        except StoreUnavailable as exc:
            self._store_failed(exc.__cause__ or exc)
            return self._defer(items)
        self._store_back()
        quarantined = dropped = 0
        if refused:
            quarantined, dropped = self._quarantine(refused)
        n = sum(map(_size, items)) - quarantined - dropped
        self.written += n
        self._count("written", n)
        return Written(stored=n, quarantined=quarantined, dropped=dropped)

    def offer(self, items: list[tuple]) -> list[tuple[tuple, str]]:
        """Store `(kind, record, None)` items now, whatever the backoff; returns those the store
        refuses for what they are, each with its reason (nothing is quarantined or counted here).
        Raises StoreUnavailable when the store itself fails. `make replay-quarantine` uses it."""
        with self._write_lock:
            return self._store_isolating(items)

    def _store_failed(self, exc: BaseException) -> None:
        why = redact(f"{type(exc).__name__}: {_describe_error(exc)}")[:300]
        if self.store_ok:
            log.warning("prediction store %s unavailable (%s); spooling to %s", self.store_name(), why, self.spool_dir)
        self._failures += 1  # backoff: reset only by a write the store took (not by a ping)
        self._failed_at = time.monotonic()
        self.store_ok = False
        self.store_error = why
        self.last_error = f"store: {why}"

    def retry_at(self) -> float:
        """When a store that is down is tried next (monotonic clock): exponential backoff from
        `replay_interval_s`, doubling per failed try, capped at `retry_max_s`."""
        delay = max(0.01, self.replay_interval_s) * 2 ** min(max(self._failures - 1, 0), 30)
        return self._failed_at + min(self.retry_max_s, delay)

    def _store_back(self) -> None:
        if not self.store_ok:
            log.warning("prediction store is back")
        if self.spool_full:
            self._scan_spool()  # the spool may have room again
        self.store_ok = True
        self.store_error = ""
        self._failures = 0

    def _groups(self, items: list[tuple]) -> list[tuple[str, list[tuple]]]:
        groups: dict[str, list] = {}
        for it in items:
            groups.setdefault(it[0], []).append(it)
        return list(groups.items())

    def _store_isolating(self, items: list[tuple]) -> list[tuple[tuple, str]]:
        """Write items kind by kind; a write failing with a record error is bisected down to the
        records that cause it, returned with their reasons. Raises StoreUnavailable (after one
        call, no bisection) when the error is the store's."""
        refused: list[tuple[tuple, str]] = []
        for kind, group in self._groups(items):
            self._store_group(kind, group, refused)
        return refused

    def _store_group(self, kind: str, group: list[tuple], refused: list) -> None:
        try:
            self._to_store(kind, [it[1] for it in group])
        except Exception as exc:
            if self._unavailable(exc):
                raise StoreUnavailable(str(exc)) from exc
            if len(group) == 1:
                refused.append((group[0], f"{type(exc).__name__}: {exc}"))
                return
            mid = len(group) // 2
            self._store_group(kind, group[:mid], refused)
            self._store_group(kind, group[mid:], refused)

    def _unavailable(self, exc: Exception) -> bool:
        """Anything but an error the store provably attributes to the records (is_record_error)."""
        check = getattr(self.store, "is_record_error", None)
        if check is not None:
            return not check(exc)
        return not is_record_error(exc)

    def _to_store(self, kind: str, records: list) -> None:
        if kind == PREDICTION:
            self.store.insert_predictions(records)
        elif kind == ENCODED:
            self.store.insert_encoded(records)
        elif kind == BATCH:
            for b in records:
                self.store.insert_batch(b)
        elif kind == EBATCH:
            for b, doc in records:
                self.store.insert_encoded_batch(b, doc)
        elif kind == FEEDBACK:
            self.store.add_feedback_many(records)
        else:
            raise ValueError(f"unknown record kind {kind!r}")

    def _quarantine(self, refused: list[tuple[tuple, str]]) -> tuple[int, int]:
        """Set records the store refuses (with their reasons) aside in the quarantine; returns
        (quarantined, dropped): those beyond its cap (or the spool's) are dropped and counted."""
        return self._set_aside([(quarantine_line(it[0], it[1], why), _size(it)) for it, why in refused], refused[0][1])

    def _set_aside(self, entries: list[tuple[str, int]], reason: str) -> tuple[int, int]:
        """Quarantine lines, each with the number of records it holds; returns (quarantined, dropped)."""
        live = self._seg.bytes if self._seg is not None else 0
        try:
            k, size = self.quarantine.add([ln for ln, _ in entries], self.spool_max_bytes - self._spool_used - live)
            err = f"quarantine {self.quarantine.dir} full (limit {self.quarantine.max_bytes} bytes, or the spool's)"
        except OSError as exc:
            k, size, err = 0, 0, f"{type(exc).__name__}: {exc}"
        quarantined = sum(n for _, n in entries[:k])
        dropped = sum(n for _, n in entries[k:])
        self._spool_used += size
        if quarantined:
            log.error(
                "%d prediction-log record(s) refused by the store (%s); set aside in %s",
                quarantined,
                redact(reason)[:200],
                self.quarantine.dir,
            )
            self.quarantined += quarantined
            self._count("quarantined", quarantined)
        if dropped:
            log.error("%d record(s) refused by the store could not be quarantined (%s); dropped", dropped, err)
            self.last_error = f"quarantine: {err}"
            self.dropped += dropped
            self._last_drop = time.monotonic()
            self._count("dropped", dropped)
        return quarantined, dropped

    def _defer(self, items: list[tuple]) -> Written:
        """Items the store did not take: journaled ones are replayed from their segment, the others
        go to a spool file (dropped and counted when that cannot be written)."""
        loose = []
        with self._jlock:
            for it in items:
                seg = it[2]
                if seg is not None and not seg.closed:
                    seg.dirty = True
                else:
                    loose.append(it)
        n = sum(map(_size, items)) - sum(map(_size, loose))
        if n:
            self.spooled += n
            self._count("spooled", n)
        res = self._spool(loose) if loose else Written()
        return Written(spooled=n + res.spooled, quarantined=res.quarantined, dropped=res.dropped)

    def _spool(self, items: list[tuple]) -> Written:
        """Records only in memory -> one fsync'ed spool file; dropped and counted when it cannot be written."""
        encoded = [(it, _line(it[0], it[1])) for it in items]
        bad = [(it, "record cannot be encoded as JSON") for it, ln in encoded if ln is None]
        quarantined, qdropped = self._quarantine(bad) if bad else (0, 0)
        n = sum(_size(it) for it, ln in encoded if ln is not None)
        data = b"".join(ln for _, ln in encoded if ln is not None)
        if not data:
            return Written(quarantined=quarantined, dropped=qdropped)
        self._seq += 1
        name = self.spool_dir / f"{time.time_ns()}-{os.getpid()}-{self._seq}.jsonl"
        tmp = name.with_suffix(".tmp")
        fd = None
        try:
            live = self._seg
            if self._spool_used + (live.bytes if live is not None else 0) + len(data) > self.spool_max_bytes:
                self.spool_full = True
                raise OSError(f"spool folder limit of {self.spool_max_bytes} bytes reached")
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            fd = _create_locked(tmp)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.replace(tmp, name)
            _fsync_dir(self.spool_dir)
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            log.error("spooling %d prediction-log record(s) failed (%s); dropped", n, exc)
            self.last_error = f"spool: {type(exc).__name__}: {exc}"
            self.dropped += n
            self._last_drop = time.monotonic()
            self._count("dropped", n)
            return Written(quarantined=quarantined, dropped=qdropped + n)
        finally:
            if fd is not None:
                os.close(fd)
        self._spool_used += len(data)
        self.spooled += n
        self._count("spooled", n)
        return Written(spooled=n, quarantined=quarantined, dropped=qdropped)

    # ---- spool replay -------------------------------------------------------------------------------
    def spool_files(self) -> list[Path]:
        if not self.spool_dir.exists():
            return []
        return sorted(self.spool_dir.glob("*.jsonl"))

    def maybe_replay(self, force: bool = False) -> int:
        """Replay the spool when due: every `replay_interval_s`, or while the store is down when its
        backoff runs out (doubling up to `retry_max_s` after each failed try)."""
        now = time.monotonic()
        if not force:
            if not self.store_ok and now < self.retry_at():
                return 0
            if self.store_ok and now - self._last_replay < self.replay_interval_s:
                return 0
        self._last_replay = now
        files = self.spool_files()
        if not files and not self.store_ok:  # nothing to replay: ask the store itself
            ok = False
            try:
                ok = bool(self.store.ping())
            except Exception:
                ok = False
            if ok:
                self.store_ok = True  # the next write tells; the backoff stays until one succeeds
            else:
                self._store_failed(ConnectionError("store does not answer"))
            return 0
        return self.replay() if files else 0

    def replay_quarantine(self) -> ReplayResult:
        """Offer every quarantined record to the store again (see serving/quarantine.py's docstring)."""
        plog, quarantine = self, self.quarantine
        res = ReplayResult()
        for path in quarantine.files():
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # another replay is on it
                keep: list[str] = []
                items: list[tuple] = []
                for raw in path.read_text(encoding="utf-8", errors="backslashreplace").splitlines():
                    if not raw.strip():
                        continue
                    item = parse_line(raw)
                    if item is None:
                        keep.append(raw + "\n")
                    else:
                        items.append(item)
                refused: list = []
                try:
                    for i in range(0, len(items), plog.batch_size):
                        refused += plog.offer(items[i : i + plog.batch_size])
                except StoreUnavailable as exc:  # this file stays as it is (a replay is idempotent)
                    res.store_error = f"{type(exc.__cause__ or exc).__name__}: {exc}"
                    res.kept += len(keep) + len(items)
                    break
                keep += [quarantine_line(kind, rec, why) for (kind, rec, *_), why in refused]
                quarantine.rewrite(path, keep)
                res.files += 1
                res.replayed += len(items) - len(refused)
                res.kept += len(keep)
            finally:
                os.close(fd)
        quarantine.usage()
        return res

    def replay(self) -> int:
        """Move spooled records into the store; returns how many were replayed."""
        reclaim_orphans(self.spool_dir)
        done = 0
        for path in self.spool_files():
            fd = _try_lock(path)
            if fd is None:
                continue  # another process is on it
            claimed = path.with_name(f"{path.stem}.replaying-{os.getpid()}")
            try:
                try:
                    os.rename(path, claimed)
                except OSError:
                    continue  # another process took it
                try:
                    n = self._replay_file(claimed, path.name)
                except StoreUnavailable as exc:
                    log.warning("spool replay of %s failed (%s); will retry", path.name, exc)
                    self._store_failed(exc.__cause__ or exc)
                    try:
                        os.rename(claimed, path)
                    except OSError:
                        pass
                    break
                claimed.unlink()
                done += n
                self._count("replayed", n)
                self._store_back()
            finally:
                os.close(fd)
        if done:
            log.info("replayed %d spooled record(s) into the prediction store", done)
        self._scan_spool()
        return done

    def _replay_file(self, path: Path, name: str) -> int:
        """Store the records of one spool file, `batch_size` at a time (lines that cannot be read
        back go to quarantine; a torn last line, from a journal write that failed, is skipped: its
        record stayed in memory). Raises StoreUnavailable."""
        done, items, bad = 0, [], []

        def push():
            nonlocal done, items
            if items:
                with self._write_lock:
                    refused = self._store_isolating(items)
                quarantined, dropped = self._quarantine(refused) if refused else (0, 0)
                done += sum(map(_size, items)) - quarantined - dropped
                items = []

        with open(path, "rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # torn last line
                if not raw.strip():
                    continue
                item = parse_line(raw)
                if item is None:
                    bad.append(raw.decode("utf-8", "backslashreplace"))
                    continue
                items.append(item)
                if sum(map(_size, items)) >= self.batch_size:
                    push()
        push()
        if bad:
            why = f"a line of spool file {name} cannot be read back"
            self._set_aside([(json.dumps({"line": text, "error": why, "file": name}) + "\n", 1) for text in bad], why)
        return done

    def _scan_spool(self) -> None:
        """Bytes in the spool folder besides this process's live segment (every process's files)."""
        total = 0
        live = self._seg.path if self._seg is not None else None
        try:
            for p in self.spool_dir.iterdir():
                if p.is_file() and p != live:
                    try:
                        total += p.stat().st_size
                    except OSError:
                        pass
        except OSError:
            pass
        total += self.quarantine.usage()[1]
        self._spool_used = total
        if self.spool_full and total + (self._seg.bytes if self._seg else 0) < 0.9 * self.spool_max_bytes:
            self.spool_full = False
        self._last_scan = time.monotonic()

    # ---- background thread --------------------------------------------------------------------------
    def _take(self) -> tuple[list[tuple], _Segment | None]:
        """Queued items worth up to `batch_size` records, stopping at a segment marker (returned)."""
        items, n = [], 0
        while n < self.batch_size:
            try:
                item = self._q.popleft()
            except IndexError:
                break
            if item[0] == _MARK:
                if items:
                    with self._jlock:
                        self._queued -= n
                return items, item[1]
            items.append(item)
            n += _size(item)
        if n:
            with self._jlock:
                self._queued -= n
        return items, None

    def _drain(self) -> bool:
        """Write everything queued (markers end their segments). True when anything was written."""
        wrote = False
        with self._drain_lock:
            while True:
                items, seg = self._take()
                if items:
                    self._write(items)
                    wrote = True
                if seg is not None:
                    self._end_segment(seg)
                if not items and seg is None:
                    return wrote

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()
                self._waiting = 0
                if self._stop.is_set():
                    break
                if self._seg is None or self._seg.bytes:
                    self._rotate()
                self._drain()
                now = time.monotonic()
                if now - self._last_scan >= max(self.replay_interval_s, 1.0):
                    reclaim_orphans(self.spool_dir)
                    self._scan_spool()
                if not self.store_ok or self.spool_files():
                    self.maybe_replay()
            except Exception:  # never let the writer die
                log.exception("prediction log writer error")
                time.sleep(0.5)

    def _count(self, what: str, n: int) -> None:
        if self.metrics is not None:
            try:
                self.metrics.log_records.labels(what).inc(n)
            except Exception:
                pass


OPEN_LOGS: list[PredictionLog] = []  # the started logs of this process: the app's and each /v2 model's


def close_at_exit(plog: PredictionLog) -> PredictionLog:
    """Remember a started log so that `close_open_logs` flushes it when the process ends."""
    OPEN_LOGS.append(plog)
    return plog


def close_open_logs() -> None:
    """Flush and close every remembered log (atexit, and the server's worker exit)."""
    while OPEN_LOGS:
        plog = OPEN_LOGS.pop()
        try:
            plog.close()
        except Exception:
            log.exception("flushing a prediction log at exit failed")


atexit.register(close_open_logs)
