"""Shadow traffic: mirror a fraction of predictions to the candidate model after the answer is sent.

With `SHADOW_FRACTION > 0` a request (a `/predict` row, each row of `/predict/batch`, each tabular
record of the stream consumer: `offer_sampled` after its result is put, serving/consumer.py) is mirrored
when sha256("shadow:" + request_id) mapped to [0, 1) falls below the fraction: deterministic per
request id and independent of the canary split. The request thread only does a non-blocking `put`
of the validated values on a bounded queue (`SHADOW_QUEUE_MAX`) after its answer is built; when the
queue is full the mirror is dropped and counted (`churn_shadow_requests_total{outcome="dropped_queue_full"}`).
One worker thread per process takes the queue, predicts with the candidate and logs the prediction
to the prediction log as route `shadow` with the SAME request id as the champion's answer, so a
feedback label joins to both (`churnops.shadow_test` pairs them for the promotion rule).

The candidate is the version holding the `challenger` alias whose governance outcome is one of
`churnops.governance.CANARY_OUTCOMES` (a version that passed every rule, awaiting approval), on a
run other than the champion's; the canary's challenger when one is loaded. The worker loads it itself
(in its thread, never on a request) and looks again every `SHADOW_REFRESH_S`. Shadow never changes an
answer: nothing it does runs before the answer is complete, and a candidate that fails is counted
(`failed`) and logged, never raised.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from churnops.governance import CANARY_OUTCOMES, CHALLENGER
from churnops.redact import redact
from churnops.registry import alias_version
from churnops.request_ids import new_request_id
from churnops.settings import Settings
from churnops.shadow_test import SHADOW_ROUTE
from serving.answers import answers_for
from serving.model import load_model

log = logging.getLogger(__name__)

LOGGED, DROPPED, NO_CANDIDATE, FAILED = "logged", "dropped_queue_full", "no_candidate", "failed"


def shadow_fraction_of(request_id: str) -> float:
    """sha256("shadow:" + request_id) as a number in [0, 1) (salted: independent of the canary split)."""
    digest = hashlib.sha256(f"shadow:{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def mirrored(request_id: str, fraction: float) -> bool:
    """Whether `request_id` is mirrored at `fraction`."""
    return fraction >= 1.0 or (fraction > 0.0 and shadow_fraction_of(request_id) < fraction)


@dataclass
class Mirror:
    """Validated rows to answer with the candidate: request ids and their clean values (records or columns)."""

    request_ids: list[str]
    records: list[dict] | None = None  # one dict of clean values per row
    columns: dict | None = None  # or the batch's columns (churnops.speed.columnar.ColumnBatch.take)
    source: str = "http"
    champion_version: str | None = None
    log_ids: list[str] | None = None  # the shadow records' log `_id`s (default: new ones); stream: fixed per record


def registry_candidate(s: Settings, champion) -> Any:
    """Load the `challenger` alias's version when it may take shadow traffic (else None)."""
    mv = alias_version(s.model_name, CHALLENGER, s)
    if mv is None or (champion is not None and mv.run_id == champion.run_id):
        return None
    if (mv.tags or {}).get("outcome") not in CANARY_OUTCOMES:
        return None
    return load_model(f"models:/{s.model_name}/{mv.version}", SHADOW_ROUTE, s)


class ShadowMirror:
    """The bounded queue and the worker thread of one process (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        plog,
        metrics,
        current_models: Callable[[], Any],
        load_candidate: Callable[[Any], Any] | None = None,
        write: Callable[[list[dict]], Any] | None = None,
    ):
        self.fraction = float(settings.shadow_fraction)
        self.enabled = self.fraction > 0.0  # fixed for the process: an attribute, read on every request
        self.refresh_s = float(settings.shadow_refresh_s)
        self.plog = plog
        # how the worker logs its records: queued for the log's writer thread (HTTP), or written at once
        # (the stream consumer, whose log has no writer thread: PredictionLog.write_now)
        self.write = write or plog.submit_many
        self.metrics = metrics
        self.current_models = current_models  # () -> the ModelSet serving now (or None)
        self.load_candidate = load_candidate or (lambda champion: registry_candidate(settings, champion))
        self.queue: queue.Queue[Mirror | None] = queue.Queue(maxsize=settings.shadow_queue_max)
        self.candidate: Any = None
        self.candidate_checked = -1e18
        self.candidate_for: str | None = None  # the champion run the candidate was looked up for
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        if self.enabled:  # every outcome on /metrics from the start (0 until it happens)
            for outcome in (LOGGED, DROPPED, NO_CANDIDATE, FAILED):
                self.count(outcome, 0)

    def count(self, outcome: str, n: int = 1) -> None:
        try:
            self.metrics.shadow.labels(outcome).inc(n)
        except Exception:  # metrics never fail anything
            pass

    # ---- request threads: a non-blocking put, after the answer is built --------------------------------

    def offer(self, item: Mirror) -> bool:
        """Queue `item` for the worker; False (dropped, counted) when the queue is full."""
        self.start()
        try:
            self.queue.put_nowait(item)
            return True
        except queue.Full:
            self.count(DROPPED, len(item.request_ids))
            return False

    def offer_row(self, request_id: str, values: dict, champion_version: str | None = None) -> None:
        """Mirror one validated row when its request id is sampled."""
        if self.enabled and mirrored(request_id, self.fraction):
            self.offer(Mirror([request_id], records=[values], champion_version=champion_version))

    def offer_sampled(self, item: Mirror) -> None:
        """Mirror the rows of `item` (records) whose request ids are sampled (the stream consumer's batch)."""
        if not self.enabled or item.records is None:
            return
        idx = [i for i, rid in enumerate(item.request_ids) if mirrored(rid, self.fraction)]
        if idx:
            ids = item.log_ids
            self.offer(
                Mirror(
                    [item.request_ids[i] for i in idx],
                    records=[item.records[i] for i in idx],
                    source=item.source,
                    champion_version=item.champion_version,
                    log_ids=None if ids is None else [ids[i] for i in idx],
                )
            )

    def offer_batch(
        self, request_ids: list[str], take: Callable[[Any], dict], positions: list[int] | None = None
    ) -> None:
        """Mirror the sampled rows of a batch (`positions`: the rows eligible, default all; `take(idx)`:
        their columns, `ColumnBatch.take`)."""
        if not self.enabled:
            return
        rows = range(len(request_ids)) if positions is None else positions
        idx = [i for i in rows if mirrored(request_ids[i], self.fraction)]
        if idx:
            self.offer(Mirror([request_ids[i] for i in idx], columns=take(np.asarray(idx, dtype=np.int64))))

    # ---- the worker thread ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker once (lazily: a forked gunicorn worker starts its own)."""
        if self.thread is not None and self.thread.is_alive():
            return
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self.run, name="shadow-mirror", daemon=True)
                self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Let the worker finish what is queued, then end it (at most about 2 x `timeout` seconds: a full
        queue behind a candidate that hangs does not hold the caller's shutdown)."""
        t = self.thread
        if t is not None and t.is_alive():
            try:
                self.queue.put(None, timeout=timeout)
            except queue.Full:
                return
            t.join(timeout)

    def run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                self.answer(item)
            except Exception as exc:  # the worker never dies of one mirror
                self.count(FAILED, len(item.request_ids) if item else 1)
                log.warning("shadow prediction failed: %s", redact(f"{type(exc).__name__}: {exc}")[:300])
            finally:
                self.queue.task_done()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is answered (tests, shutdown); True when it was."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.queue.unfinished_tasks

    def current_candidate(self) -> Any:
        """The candidate model (looked up again every `refresh_s`, or when the champion changed)."""
        ms = self.current_models()
        champion = getattr(ms, "champion", None)
        if getattr(ms, "challenger", None) is not None:  # the canary's challenger is loaded already
            return ms.challenger
        run = getattr(champion, "run_id", None)
        now = time.monotonic()
        if run != self.candidate_for or now - self.candidate_checked >= self.refresh_s:
            self.candidate_checked, self.candidate_for = now, run
            try:
                found = self.load_candidate(champion)
            except Exception as exc:  # registry down: keep the candidate we had
                log.warning("could not look up the shadow candidate: %s", redact(exc)[:300])
                found = self.candidate
            self.candidate = found
        return self.candidate

    def answer(self, item: Mirror) -> None:
        """Predict `item` with the candidate and log each row as route `shadow`."""
        m = self.current_candidate()
        n = len(item.request_ids)
        if m is None:
            self.count(NO_CANDIDATE, n)
            return
        t0 = time.perf_counter()
        enc = m.bundle.encoder
        X = enc.transform_records(item.records) if item.records is not None else enc.transform_columns(item.columns, n)
        proba = m.bundle.predict_matrix(X)
        latency = (time.perf_counter() - t0) * 1000 / max(n, 1)
        task, thr, now = answers_for(m.bundle.task), m.threshold, time.time()
        records = []
        for i, (rid, p) in enumerate(zip(item.request_ids, proba.tolist())):
            values = item.records[i] if item.records is not None else row_values(item.columns, i)
            d = task.decide(p, thr)
            records.append(
                {
                    "_id": item.log_ids[i] if item.log_ids is not None else new_request_id(),
                    "ts": now,
                    "request_id": rid,
                    "source": item.source,
                    "model_run_id": m.run_id,
                    "model_version": m.version,
                    "route": SHADOW_ROUTE,
                    "features": values,
                    **task.log_fields(float(p), d),
                    "latency_ms": round(latency, 3),
                }
            )
        self.write(records)
        self.count(LOGGED, n)


def row_values(columns: dict, i: int) -> dict:
    """Row `i` of a batch's columns as a dict of plain clean values."""
    out = {}
    for k, col in columns.items():
        v = col[i]
        if hasattr(v, "item"):
            v = v.item()
        out[k] = None if isinstance(v, float) and v != v else v
    return out
