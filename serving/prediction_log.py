"""Writes to the prediction log, off the request path, losing nothing when the store is down.

One `PredictionLog` per process: `submit()` only appends to an in-memory queue; a background
thread takes up to `batch_size` records (or whatever arrived within `flush_interval_s`) and
upserts them into the store. When the store raises, the batch is appended to a JSONL file in
the spool folder (fsync'ed) and replayed once the store answers again; replay is idempotent
because every write is an upsert by `_id`. `close()` (atexit, gunicorn `worker_exit`, SIGTERM
in the consumer) drains the queue before the process ends.

Several processes may share one spool folder: a file is claimed by renaming it before replay,
so two processes never replay the same file at once (and a double replay would be harmless).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from pathlib import Path

from serving.store import PredictionStore

log = logging.getLogger(__name__)

PREDICTION, FEEDBACK = "prediction", "feedback"


class PredictionLog:
    def __init__(self, store: PredictionStore, spool_dir: str | Path, batch_size: int = 500,
                 flush_interval_s: float = 0.5, replay_interval_s: float = 2.0, metrics=None):
        self.store = store
        self.spool_dir = Path(spool_dir)
        self.batch_size = max(1, int(batch_size))
        self.flush_interval_s = float(flush_interval_s)
        self.replay_interval_s = float(replay_interval_s)
        self.metrics = metrics
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._seq = 0
        self._last_replay = 0.0
        self.store_ok = True
        self.written = 0
        self.spooled = 0

    # ---- producer side ---------------------------------------------------------------------------
    def submit(self, record: dict) -> None:
        self._q.put((PREDICTION, record))

    def submit_many(self, records: list[dict]) -> None:
        for r in records:
            self._q.put((PREDICTION, r))

    def submit_feedback(self, request_id: str, outcome: int, ts: float) -> None:
        self._q.put((FEEDBACK, {"request_id": str(request_id), "outcome": int(outcome), "ts": float(ts)}))

    def pending(self) -> int:
        return self._q.qsize()

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
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.flush()

    def flush(self) -> None:
        """Drain the queue now, in the calling thread."""
        while True:
            batch = self._take(block=False)
            if not batch:
                return
            self.write_now(batch)

    # ---- writing ----------------------------------------------------------------------------------
    def write_now(self, items: list[tuple[str, dict]] | list[dict]) -> bool:
        """Write items synchronously (store, else spool). Returns True when the store took them.

        Items are `(kind, record)` pairs or bare prediction dicts. Never raises for a store error.
        """
        items = [i if isinstance(i, tuple) else (PREDICTION, i) for i in items]
        if not items:
            return True
        with self._write_lock:
            try:
                self._to_store(items)
                if not self.store_ok:
                    log.warning("prediction store is back")
                self.store_ok = True
                self.written += len(items)
                self._count("written", len(items))
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
        for k, r in items:
            if k == FEEDBACK:
                self.store.add_feedback(r["request_id"], r["outcome"], r["ts"])

    def _spool(self, items: list[tuple[str, dict]]) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = self.spool_dir / f"{time.time_ns()}-{os.getpid()}-{self._seq}.jsonl"
        tmp = name.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            for k, r in items:
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
        self.spooled += len(items)
        self._count("spooled", len(items))

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
                            items.append((d["kind"], d["record"]))
                for i in range(0, len(items), self.batch_size):
                    with self._write_lock:
                        self._to_store(items[i:i + self.batch_size])
                claimed.unlink()
                done += len(items)
                self._count("replayed", len(items))
            except Exception as exc:
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
    def _take(self, block: bool) -> list[tuple[str, dict]]:
        """Up to `batch_size` items; when blocking, collect for at most `flush_interval_s`.

        Waiting out the interval (instead of writing whatever is there) keeps the writer asleep
        between flushes, so it rarely competes with request threads for the GIL.
        """
        items = []
        if block:
            try:
                items.append(self._q.get(timeout=self.flush_interval_s))
            except queue.Empty:
                return items
            deadline = time.monotonic() + self.flush_interval_s
            while len(items) < self.batch_size and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    items.append(self._q.get(timeout=left))
                except queue.Empty:
                    break
        while len(items) < self.batch_size:
            try:
                items.append(self._q.get_nowait())
            except queue.Empty:
                break
        return items

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._take(block=True)
                if batch:
                    self.write_now(batch)
                elif self.spool_files():
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
