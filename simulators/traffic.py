"""Shared core of the business simulators: customers, drift injection, pacing, delayed labels.

Customers are sampled (seeded, with replacement) from the feature-store snapshot when it can be
read, else from the project's seeded SYNTHETIC generator. Drift is injected on the clean
feature values before they are sent:

* ``shift``    numeric shift: total_trans_ct and total_trans_amt fall by up to 40 %
* ``category`` changed category frequencies: card_category moves off "blue" (up to 50 %),
               marital_status towards "single" (up to 30 %)
* ``missing``  spike of missing values: education_level / income_category unknown (up to 60 %)
* ``concept``  concept drift: the TRUE outcome of low-income customers (income "less than
               $40k") is flipped (up to 100 %); features are unchanged

``sudden`` applies full strength from the onset; ``gradual`` ramps strength linearly from 0 to 1
over the run. Every run is bounded (count or seconds) and the outcome of each sent record is
posted to `POST /feedback` after `feedback_delay_s`.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

import httpx
import numpy as np
import pandas as pd

from churnops.cleaning import clean_frame
from churnops.feature_store import latest_snapshot, read_snapshot
from churnops.settings import get_settings
from churnops.synthetic import generate_customers

log = logging.getLogger(__name__)

DRIFT_KINDS = ("shift", "category", "missing", "concept")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
CONCEPT_SEGMENT = ("income_category", "less than $40k")


def parse_drift(value: str | list[str] | None) -> list[str]:
    if not value:
        return []
    kinds = [k.strip().lower() for k in (value.split(",") if isinstance(value, str) else value) if k.strip()]
    bad = [k for k in kinds if k not in DRIFT_KINDS and k != "none"]
    if bad:
        raise ValueError(f"unknown drift kind(s) {bad}; choose from {list(DRIFT_KINDS)}")
    return [k for k in kinds if k != "none"]


def check_loopback(url: str | None, what: str, allow_remote: bool = False) -> None:
    """Simulators talk to this machine only unless explicitly allowed (Compose service names)."""
    if url is None or allow_remote:
        return
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"{what} {url} is not a loopback address; pass --allow-remote to send traffic there")


# ---- customers -----------------------------------------------------------------------------------------


def customer_pool(settings, contract, source: str = "auto", seed: int = 42, n: int = 5000) -> tuple[pd.DataFrame, str]:
    """Clean customers with their label: (frame, description of where they came from)."""
    if source in ("auto", "snapshot"):
        try:
            snap = latest_snapshot(contract, settings)
            df = read_snapshot(snap, contract, settings)
            tag = " (SYNTHETIC)" if snap.synthetic else ""
            return df.reset_index(drop=True), f"feature-store snapshot {snap.uri}{tag}"
        except Exception as exc:
            if source == "snapshot":
                raise
            log.info("no feature-store snapshot (%s): using the synthetic generator", type(exc).__name__)

    return clean_frame(generate_customers(n, seed), contract), f"SYNTHETIC generator (seed {seed}, {n} customers)"


def strengths(n: int, mode: str = "sudden", onset: float = 0.0) -> np.ndarray:
    """Drift strength in [0, 1] per record index."""
    i = np.arange(n)
    start = int(round(onset * n))
    if mode == "gradual":
        span = max(n - start - 1, 1)
        return np.clip((i - start) / span, 0.0, 1.0) * (i >= start)
    return (i >= start).astype(float)


def apply_drift(
    df: pd.DataFrame, kinds: list[str], strength: np.ndarray, rng: np.random.Generator, target: str = "churn"
) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Inject drift into clean rows; returns (features, outcomes, counts of rows changed per kind)."""
    df = df.reset_index(drop=True).copy()
    n = len(df)
    s = np.asarray(strength, dtype=float)
    outcome = df[target].to_numpy(dtype=float).astype(int) if target in df else np.zeros(n, dtype=int)
    changed: dict[str, int] = {}
    if "shift" in kinds:
        for col in ("total_trans_ct", "total_trans_amt"):
            factor = 1.0 - 0.4 * s
            v = df[col].to_numpy(dtype=float) * factor
            df[col] = np.round(v) if col == "total_trans_ct" else np.round(v, 0)
        changed["shift"] = int((s > 0).sum())
    if "category" in kinds:
        move = rng.random(n) < 0.5 * s
        df.loc[move, "card_category"] = rng.choice(["silver", "gold", "platinum"], int(move.sum()), p=[0.6, 0.3, 0.1])
        single = rng.random(n) < 0.3 * s
        df.loc[single, "marital_status"] = "single"
        changed["category"] = int((move | single).sum())
    if "missing" in kinds:
        total = np.zeros(n, dtype=bool)
        for col in ("education_level", "income_category"):
            m = rng.random(n) < 0.6 * s
            df[col] = df[col].astype(object).where(~m, None)
            total |= m
        changed["missing"] = int(total.sum())
    if "concept" in kinds:
        col, value = CONCEPT_SEGMENT
        seg = (df[col].astype(object) == value).to_numpy() & (rng.random(n) < s)
        outcome = np.where(seg, 1 - outcome, outcome)
        changed["concept"] = int(seg.sum())
    return df, outcome, changed


def to_request_features(row: dict, contract) -> dict:
    """Clean values -> what a client sends: numbers, category strings; missing ordinal -> "Unknown"."""
    out = {}
    for name, spec in contract.features.items():
        v = row.get(name)
        if spec.kind == "numeric":
            out[name] = int(v) if spec.dtype == "int" and v is not None and float(v).is_integer() else float(v)
        else:
            out[name] = "Unknown" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    return out


@dataclass
class Planned:
    request_id: str
    features: dict
    outcome: int
    strength: float


def plan_records(
    pool: pd.DataFrame,
    contract,
    n: int,
    seed: int,
    drift: list[str],
    mode: str = "sudden",
    onset: float = 0.0,
    prefix: str = "sim",
) -> tuple[list[Planned], dict]:
    """The `n` records a simulator will send, drift applied; (records, drift counts)."""
    rng = np.random.default_rng(seed)
    rows = pool.iloc[rng.integers(0, len(pool), n)]
    st = strengths(n, mode, onset) if drift else np.zeros(n)
    feats, outcomes, changed = apply_drift(rows, drift, st, rng, contract.target.name)
    records = feats[contract.feature_names].to_dict(orient="records")
    run = uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63))).hex[:8]
    planned = [
        Planned(f"{prefix}-{run}-{i:07d}", to_request_features(r, contract), int(o), float(x))
        for i, (r, o, x) in enumerate(zip(records, outcomes, st))
    ]
    return planned, changed


# ---- pacing + delayed feedback -------------------------------------------------------------------------


@dataclass
class RunStats:
    name: str
    planned: int = 0
    sent: int = 0
    counts: Counter = field(default_factory=Counter)  # "POST /predict 200", "kinesis put ok", ...
    feedback_sent: int = 0
    feedback_pending: int = 0
    drift: dict = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "planned": self.planned,
            "sent": self.sent,
            "counts": dict(self.counts),
            "feedback_sent": self.feedback_sent,
            "feedback_pending": self.feedback_pending,
            "drift": self.drift,
            "seconds": round(self.seconds, 2),
        }


class FeedbackSender:
    """POSTs `{"request_id", "outcome"}` to the API's /feedback (with FEEDBACK_TOKEN when it is set)."""

    def __init__(self, api_url: str, timeout: float = 5.0, token: str | None = None):
        if token is None:
            secret = get_settings().feedback_token
            token = secret.get_secret_value() if secret is not None else ""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=api_url.rstrip("/"), timeout=timeout, headers=headers)

    def __call__(self, request_id: str, outcome: int) -> str:
        try:
            r = self.client.post("/feedback", json={"request_id": request_id, "outcome": int(outcome)})
            return f"POST /feedback {r.status_code}"
        except httpx.HTTPError as exc:
            return f"POST /feedback error:{type(exc).__name__}"

    def close(self) -> None:
        self.client.close()


def run_paced(
    records: list[Planned],
    send_batch: Callable[[list[Planned]], list[tuple[Planned, str, bool]]],
    stats: RunStats,
    rate: float,
    seconds: float | None,
    feedback: Callable[[str, int], str] | None,
    feedback_delay_s: float,
    stop: Callable[[], bool] = lambda: False,
    max_batch: int = 100,
    drain: bool = True,
) -> RunStats:
    """Send `records` at `rate`/s for at most `seconds`; post outcomes `feedback_delay_s` after each send.

    `send_batch` returns (record, count key, accepted) per record; only accepted records get feedback.
    """
    t0 = time.monotonic()
    deadline = t0 + seconds if seconds else math.inf
    due: list[tuple[float, int, str, int]] = []
    i, n = 0, len(records)
    stats.planned = n

    def flush_feedback(until: float) -> None:
        while due and due[0][0] <= until:
            _, _, rid, outcome = heapq.heappop(due)
            key = feedback(rid, outcome) if feedback else "feedback skipped"
            stats.counts[key] += 1
            stats.feedback_sent += 1

    while i < n and not stop():
        now = time.monotonic()
        if now >= deadline:
            break
        target = min(n, int((now - t0) * rate) + 1) if rate > 0 else n
        if target > i:
            batch = records[i : min(target, i + max_batch)]
            i += len(batch)
            for rec, key, ok in send_batch(batch):
                stats.counts[key] += 1
                stats.sent += 1
                if ok and feedback is not None:
                    heapq.heappush(due, (time.monotonic() + feedback_delay_s, stats.sent, rec.request_id, rec.outcome))
        flush_feedback(time.monotonic())
        nxt = t0 + i / rate if rate > 0 else time.monotonic()
        if due:
            nxt = min(nxt, due[0][0])
        time.sleep(min(max(nxt - time.monotonic(), 0.0), 0.25, max(deadline - time.monotonic(), 0.0)))
    if drain:  # bounded: the last feedback is due feedback_delay_s after the last send
        while due and not stop():
            time.sleep(min(max(due[0][0] - time.monotonic(), 0.0), 0.25))
            flush_feedback(time.monotonic())
    stats.feedback_pending = len(due)
    stats.seconds = time.monotonic() - t0
    return stats


def planned_count(rate: float, seconds: float | None, count: int | None) -> int:
    if count:
        return int(count)
    if not seconds:
        raise ValueError("give a count or a duration")
    return max(1, int(math.ceil(rate * seconds)))
