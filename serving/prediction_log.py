"""Writes to the prediction log, off the request path, losing nothing when the store is down.

One `PredictionLog` per process: `submit()` only appends to an in-memory deque (no lock, no
thread wake-up: a `queue.Queue` woke the writer on every put and the GIL hand-offs showed in
the tail latency); a background thread wakes every `flush_interval_s`, or as soon as
`wake_records` records are waiting, and writes everything queued, `batch_size` records per store
call. A batch request is queued as ONE `PredictionBatch` (columns) and written as one unit.
When the store raises, the items are appended to a JSONL file in the spool folder (fsync'ed)
and replayed once the store answers again; replay is idempotent because stores keep the first
write of each `_id`. `close()` (atexit, gunicorn `worker_exit`, SIGTERM
in the consumer) drains the queue before the process ends.

Several processes may share one spool folder: a file is claimed by renaming it before replay,
so two processes never replay the same file at once (and a double replay would be harmless).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from pathlib import Path

from serving.store import PredictionBatch, PredictionStore

log = logging.getLogger(__name__)

PREDICTION, FEEDBACK, BATCH = "prediction", "feedback", "batch"
POISON_FAILURES = 5  # replays of one spool file that fail while the store takes other writes
ENCODED = "encoded"  # a prediction already encoded by the store: (ts, JSON bytes)


def _size(item: tuple) -> int:
    return item[1].n if item[0] == BATCH else 1


class PredictionLog:
    def __init__(self, store: PredictionStore, spool_dir: str | Path, batch_size: int = 500,
                 flush_interval_s: float = 0.5, replay_interval_s: float = 2.0, metrics=None,
                 wake_records: int | None = None):
        self.store = store
        # stores that keep JSON text take records encoded in the request thread (see SQLiteStore)
        self._encode = getattr(store, "encode_prediction", None) if hasattr(store, "insert_encoded") else None
        self.spool_dir = Path(spool_dir)
        self.batch_size = max(1, int(batch_size))
        # records queued that wake the writer before its interval; every wake-up costs the request
        # thread GIL hand-overs, so servers wake it rarely (see Settings.log_wake_records)
        self.wake_records = self.batch_size if wake_records is None else max(1, int(wake_records))
        self.flush_interval_s = float(flush_interval_s)
        self.replay_interval_s = float(replay_interval_s)
        self.metrics = metrics
        self._q: collections.deque = collections.deque()
        self._waiting = 0  # records queued since the writer last looked (approximate, lock-free)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._seq = 0
        self._last_replay = 0.0
        self._replay_failures: dict[str, tuple[int, int]] = {}  # spool file -> (written then, failures)
        self.store_ok = True
        self.written = 0
        self.spooled = 0

    # ---- producer side ---------------------------------------------------------------------------
    def _put(self, item: tuple, n: int = 1) -> None:
        self._q.append(item)
        self._waiting += n
        if self._waiting >= self.wake_records and not self._wake.is_set():
            self._wake.set()

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
            self._put((BATCH, batch), batch.n)

    def submit_feedback(self, request_id: str, outcome: int, ts: float) -> None:
        self._put((FEEDBACK, {"request_id": str(request_id), "outcome": int(outcome), "ts": float(ts)}))

    def pending(self) -> int:
        """Records queued and not yet written."""
        return sum(map(_size, list(self._q)))

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "PredictionLog":
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="prediction-log", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer and write (or spool) everything still queued."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.flush()

    def flush(self) -> None:
        """Drain the queue now, in the calling thread."""
        while True:
            batch = self._take()
            if not batch:
                return
            self.write_now(batch)

    # ---- writing ----------------------------------------------------------------------------------
    def write_now(self, items: list[tuple[str, dict]] | list[dict]) -> bool:
        """Write items synchronously (store, else spool). Returns True when the store took them.

        Items are `(kind, record)` pairs, bare prediction dicts or `PredictionBatch`es. Never raises
        for a store error.
        """
        items = [i if isinstance(i, tuple) else (BATCH, i) if isinstance(i, PredictionBatch) else (PREDICTION, i)
                 for i in items]
        if not items:
            return True
        with self._write_lock:
            try:
                self._to_store(items)
                if not self.store_ok:
                    log.warning("prediction store is back")
                self.store_ok = True
                n = sum(map(_size, items))
                self.written += n
                self._count("written", n)
                ok = True
            except Exception as exc:  # store down: keep the records on disk
                if self.store_ok:
                    log.warning("prediction store failing (%s: %s); spooling to %s", type(exc).__name__, exc,
                                self.spool_dir)
                self.store_ok = False
                self._spool(items)
                ok = False
        if ok:
            self.maybe_replay()
        return ok

    def _to_store(self, items: list[tuple[str, dict]]) -> None:
        preds = [r for k, r in items if k == PREDICTION]
        if preds:
            self.store.insert_predictions(preds)
        encoded = [r for k, r in items if k == ENCODED]
        if encoded:
            self.store.insert_encoded(encoded)
        for k, r in items:
            if k == BATCH:
                self.store.insert_batch(r)
        feedback = [r for k, r in items if k == FEEDBACK]
        if feedback:
            self.store.add_feedback_many(feedback)

    def _spool(self, items: list[tuple[str, dict]]) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = self.spool_dir / f"{time.time_ns()}-{os.getpid()}-{self._seq}.jsonl"
        tmp = name.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            for k, r in items:
                if k == ENCODED:  # replayed as a plain prediction record
                    fh.write('{"kind":"prediction","record":' + r[1].decode() + "}\n")
                    continue
                if k == BATCH:
                    r = r.to_doc()
                fh.write(json.dumps({"kind": k, "record": r}, default=str, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, name)
        try:
            dfd = os.open(self.spool_dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
        n = sum(map(_size, items))
        self.spooled += n
        self._count("spooled", n)

    def spool_files(self) -> list[Path]:
        if not self.spool_dir.exists():
            return []
        return sorted(self.spool_dir.glob("*.jsonl"))

    def maybe_replay(self, force: bool = False) -> int:
        now = time.monotonic()
        if not force and now - self._last_replay < self.replay_interval_s:
            return 0
        self._last_replay = now
        return self.replay()

    def replay(self) -> int:
        """Move spooled records into the store; returns how many were replayed."""
        self._reclaim_orphans()
        done = 0
        for path in self.spool_files():
            claimed = path.with_name(f"{path.stem}.replaying-{os.getpid()}")
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue  # another process took it
            try:
                items = []
                with open(claimed) as fh:
                    for line in fh:
                        line = line.strip()
                        if line:
                            d = json.loads(line)
                            r = PredictionBatch.from_doc(d["record"]) if d["kind"] == BATCH else d["record"]
                            items.append((d["kind"], r))
                for i in range(0, len(items), self.batch_size):
                    with self._write_lock:
                        self._to_store(items[i:i + self.batch_size])
                claimed.unlink()
                n = sum(map(_size, items))
                done += n
                self._count("replayed", n)
            except Exception as exc:
                if self._poisoned(path.name, exc):  # the store takes other writes but never this file
                    quarantine = self.spool_dir / "quarantine"
                    quarantine.mkdir(exist_ok=True)
                    os.replace(claimed, quarantine / path.name)
                    log.error("spool file %s failed %d replays while the store took other writes (%s); "
                              "moved to %s for a person to look at", path.name, POISON_FAILURES, exc, quarantine)
                    self._count("quarantined", 1)
                    continue
                log.warning("spool replay of %s failed (%s); will retry", path.name, exc)
                try:
                    os.rename(claimed, path)
                except OSError:
                    pass
                self.store_ok = False
                break
        if done:
            log.info("replayed %d spooled record(s) into the prediction store", done)
        return done

    def _poisoned(self, name: str, exc: Exception) -> bool:
        """True once `name` has failed POISON_FAILURES replays, each after the store had taken
        other writes since the file's previous failure (a store that is down fails everything, and
        then the file just waits)."""
        written_at_last, count = self._replay_failures.get(name, (-1, 0))
        if isinstance(exc, (ValueError, KeyError, TypeError)):
            count = POISON_FAILURES  # the file itself cannot be read back
        elif self.written != written_at_last:
            count += 1
        self._replay_failures[name] = (self.written, count)
        return count >= POISON_FAILURES

    def _reclaim_orphans(self) -> None:
        """Files claimed by a process that died mid-replay go back to the spool."""
        if not self.spool_dir.exists():
            return
        for p in self.spool_dir.glob("*.replaying-*"):
            try:
                pid = int(p.name.rsplit("-", 1)[1])
            except ValueError:
                continue
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                try:
                    os.rename(p, p.with_name(p.name.split(".replaying-")[0] + ".jsonl"))
                except OSError:
                    pass
            except PermissionError:
                pass

    # ---- background thread --------------------------------------------------------------------------
    def _take(self) -> list[tuple]:
        """Queued items worth up to `batch_size` records (at least one item when any is queued)."""
        items, n = [], 0
        while n < self.batch_size:
            try:
                item = self._q.popleft()
            except IndexError:
                break
            items.append(item)
            n += _size(item)
        return items

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()
                self._waiting = 0
                wrote = False
                while not self._stop.is_set():
                    batch = self._take()
                    if not batch:
                        break
                    self.write_now(batch)
                    wrote = True
                if not wrote and self.spool_files():
                    if self.maybe_replay():
                        self.store_ok = True
            except Exception:  # never let the writer die
                log.exception("prediction log writer error")
                time.sleep(0.5)

    def _count(self, what: str, n: int) -> None:
        if self.metrics is not None:
            try:
                self.metrics.log_records.labels(what).inc(n)
            except Exception:
                pass
