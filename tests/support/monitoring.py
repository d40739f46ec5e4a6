"""Monitoring helpers: a fixed churn score standing in for a model, logged windows of synthetic
traffic with feedback, a cached reference, and the drift summaries the trigger tests feed in."""

from __future__ import annotations

import numpy as np
import pandas as pd

CRITICAL = {
    "n_critical": 3,
    "critical_features": ["a", "b", "c"],
    "max_psi": 0.5,
    "prediction": {"status": "ok", "psi": 0.01, "p_value": 0.5},
    "status": "critical",
}
CALM = {
    "n_critical": 0,
    "critical_features": [],
    "max_psi": 0.01,
    "prediction": {"status": "ok", "psi": 0.01, "p_value": 0.5},
    "status": "ok",
}


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
