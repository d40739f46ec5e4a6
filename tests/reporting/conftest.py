"""Fixtures of the monitoring tests: an in-memory PredictionStore, references, logged windows."""

from __future__ import annotations

import copy
import time

import numpy as np
import pandas as pd
import pytest

from churnops.store.base import PredictionStore


class MemoryStore(PredictionStore):
    """The PredictionStore ABC in memory (same semantics: upsert by _id, windows start <= ts < end)."""

    def __init__(self):
        self.predictions: dict[str, dict] = {}
        self.feedback: dict[str, dict] = {}
        self.checkpoints: dict[str, str] = {}
        self.reports: dict[str, dict] = {}

    def insert_predictions(self, records):
        new = 0
        for r in records:
            new += r["_id"] not in self.predictions
            self.predictions[r["_id"]] = copy.deepcopy(r)
        return new

    @staticmethod
    def _in(ts, start, end):
        return (start is None or ts >= start) and (end is None or ts < end)

    def find_predictions(self, start=None, end=None, limit=None):
        out = sorted(
            (copy.deepcopy(r) for r in self.predictions.values() if self._in(r["ts"], start, end)),
            key=lambda r: r["ts"],
        )
        return out[:limit] if limit else out

    def count_predictions(self, start=None, end=None):
        return sum(self._in(r["ts"], start, end) for r in self.predictions.values())

    def add_feedback(self, request_id, outcome, ts):
        self.feedback[request_id] = {"_id": request_id, "request_id": request_id, "outcome": int(outcome), "ts": ts}

    def find_feedback(self, request_ids=None, start=None, end=None):
        ids = set(request_ids) if request_ids is not None else None
        return [
            dict(f)
            for f in self.feedback.values()
            if (ids is None or f["request_id"] in ids) and self._in(f["ts"], start, end)
        ]

    def get_checkpoint(self, key):
        return self.checkpoints.get(key)

    def set_checkpoint(self, key, value):
        self.checkpoints[key] = value

    def save_report(self, meta):
        self.reports[meta["_id"]] = copy.deepcopy(meta)

    def list_reports(self, limit=100):
        return sorted(self.reports.values(), key=lambda r: r["ts"], reverse=True)[:limit]

    def ping(self):
        return True


@pytest.fixture(autouse=True)
def _fresh_window_cache():
    """Each test starts with an empty window-summary cache (it is per process)."""
    from churnops.monitoring.window import clear_cache

    clear_cache()
    yield
    clear_cache()


@pytest.fixture(scope="session")
def contract():
    from churnops.contract import load_contract

    return load_contract("bank_churners")


def score(df: pd.DataFrame) -> np.ndarray:
    """A fixed, reasonably good churn score for synthetic customers (stands in for a model)."""
    z = (
        -0.06 * (df["total_trans_ct"] - 64)
        - 0.0004 * (df["total_revolving_bal"] - 1160)
        - 2.5 * (df["total_ct_chng_q4_q1"] - 0.71)
        + 0.4 * (df["contacts_count_12_mon"] - 2.4)
        + 0.4 * (df["months_inactive_12_mon"] - 2.3)
        - 0.35 * (df["total_relationship_count"] - 3.8)
        - 1.8
    )
    return 1.0 / (1.0 + np.exp(-z.to_numpy(dtype=float)))


@pytest.fixture(scope="session")
def reference_frame(contract):
    """Clean synthetic training reference with churn + prediction (like reference_sample.csv)."""
    from churnops.cleaning import clean_frame
    from churnops.synthetic import generate_customers

    ref = clean_frame(generate_customers(5000, seed=101), contract)
    ref["prediction"] = score(ref)
    return ref


@pytest.fixture(scope="session")
def reference(reference_frame, contract):
    from churnops.monitoring.drift import Reference

    return Reference.from_frame(reference_frame, contract, run_id="ref-run")


def log_window(
    store,
    contract,
    n: int,
    seed: int,
    end: float,
    hours: float = 3.0,
    drift: list[str] | None = None,
    feedback_fraction: float = 0.6,
    run_id: str = "ref-run",
    version: str = "1",
) -> pd.DataFrame:
    """Insert `n` predictions (synthetic customers, drift applied) spread over the window + feedback."""
    from simulators.traffic import customer_pool, plan_records

    pool, _ = customer_pool(None, contract, source="generator", seed=seed, n=max(n, 500))
    recs, _ = plan_records(pool, contract, n, seed, drift or [])
    from churnops.contract import validate_record

    rng = np.random.default_rng(seed)
    ts = np.sort(end - rng.random(n) * hours * 3600.0 * 0.999)
    clean = [validate_record(r.features, contract, "unknown").values for r in recs]
    probs = score(pd.DataFrame(clean))
    docs = []
    for i, (r, c, p, t) in enumerate(zip(recs, clean, probs, ts)):
        docs.append(
            {
                "_id": r.request_id,
                "ts": float(t),
                "request_id": r.request_id,
                "source": "http",
                "model_run_id": run_id,
                "model_version": version,
                "route": "champion" if i % 5 else "challenger",
                "features": c,
                "probability": float(p),
                "decision": int(p >= 0.5),
                "latency_ms": 1.0,
            }
        )
    store.insert_predictions(docs)
    store.add_feedback_many(
        [
            {"request_id": r.request_id, "outcome": r.outcome, "ts": float(t) + 1.0}
            for r, t in zip(recs, ts)
            if rng.random() < feedback_fraction
        ]
    )
    return pd.DataFrame(clean)


def cache_reference(settings, reference_frame, run_id: str = "ref-run") -> None:
    """What the background fetch leaves in <state_dir>/reference-cache/<run_id>/."""
    folder = settings.state_dir / "reference-cache" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    reference_frame.to_csv(folder / "reference_sample.csv", index=False)


@pytest.fixture
def settings_factory(tmp_path):
    """Settings with the reports and state folders in tmp_path."""
    from churnops.settings import Settings

    def make(**kw):
        base = dict(
            state_dir=tmp_path / "state",
            reports_dir=tmp_path / "reports",
            report_min_rows=200,
            report_max_rows=2000,
            _env_file=None,
        )
        return Settings(**(base | kw))

    return make


@pytest.fixture
def now():
    return time.time()
