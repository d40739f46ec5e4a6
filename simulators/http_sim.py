"""HTTP business simulator: `POST /predict` at a rate, outcomes to `POST /feedback` later.

python -m simulators.http_sim --seconds 20 --rate 20 --drift shift,concept --drift-mode gradual
"""

from __future__ import annotations

import argparse
import json

import httpx

from churnops.cli import fail, setup_logging
from churnops.contract import load_contract
from churnops.settings import get_settings
from simulators.traffic import (
    FeedbackSender,
    Planned,
    RunStats,
    check_loopback,
    customer_pool,
    parse_drift,
    plan_records,
    planned_count,
    run_paced,
)


def run_http(
    settings,
    contract,
    *,
    rate: float,
    seconds: float | None,
    count: int | None,
    seed: int,
    drift: list[str],
    drift_mode: str = "sudden",
    feedback_delay_s: float = 5.0,
    feedback: bool = True,
    api_url: str | None = None,
    pool=None,
    source: str = "auto",
    stop=lambda: False,
    allow_remote: bool = False,
    onset: float = 0.0,
) -> RunStats:
    api = (api_url or settings.api_url).rstrip("/")
    check_loopback(api, "API", allow_remote)
    if pool is None:
        pool, where = customer_pool(settings, contract, source, seed)
    else:
        where = "given pool"
    n = planned_count(rate, seconds, count)
    records, changed = plan_records(pool, contract, n, seed, drift, drift_mode, onset, prefix="http")
    stats = RunStats("http", drift={"kinds": drift, "mode": drift_mode, "rows_changed": changed, "customers": where})
    client = httpx.Client(base_url=api, timeout=10.0)
    fb = FeedbackSender(api) if feedback else None

    def send(batch: list[Planned]):
        out = []
        for rec in batch:
            try:
                r = client.post("/predict", json={"request_id": rec.request_id, "features": rec.features})
                out.append((rec, f"POST /predict {r.status_code}", r.status_code == 200))
            except httpx.HTTPError as exc:
                out.append((rec, f"POST /predict error:{type(exc).__name__}", False))
        return out

    try:
        return run_paced(records, send, stats, rate, None if count else seconds, fb, feedback_delay_s, stop)
    finally:
        client.close()
        if fb:
            fb.close()


def add_common_args(p: argparse.ArgumentParser, s) -> None:
    p.add_argument("--rate", type=float, default=s.simulate_rate, help="records per second")
    p.add_argument("--seconds", type=float, default=s.simulate_seconds, help="duration bound")
    p.add_argument("--count", type=int, default=s.simulate_count, help="records to send (overrides --seconds)")
    p.add_argument("--seed", type=int, default=s.seed)
    p.add_argument("--drift", default=s.simulate_drift, help="comma list of shift,category,missing,concept")
    p.add_argument("--drift-mode", choices=["sudden", "gradual"], default=s.simulate_drift_mode)
    p.add_argument("--onset", type=float, default=0.0, help="fraction of the run before drift starts")
    p.add_argument("--feedback-delay", type=float, default=s.feedback_delay_s)
    p.add_argument("--no-feedback", action="store_true")
    p.add_argument("--source", choices=["auto", "snapshot", "generator"], default="auto")
    p.add_argument("--api-url", default=s.api_url)
    p.add_argument("--allow-remote", action="store_true", help="allow non-loopback endpoints (Compose)")


def common_options(a: argparse.Namespace) -> dict:
    """The keyword arguments of `run_http` / `run_kinesis` from the options of `add_common_args`."""
    return {
        "rate": a.rate,
        "seconds": a.seconds,
        "count": a.count,
        "seed": a.seed,
        "drift": parse_drift(a.drift),
        "drift_mode": a.drift_mode,
        "feedback_delay_s": a.feedback_delay,
        "feedback": not a.no_feedback,
        "api_url": a.api_url,
        "source": a.source,
        "allow_remote": a.allow_remote,
        "onset": a.onset,
    }


def main() -> None:
    s = get_settings()
    p = argparse.ArgumentParser(description="HTTP traffic simulator")
    add_common_args(p, s)
    a = p.parse_args()
    setup_logging()
    try:
        st = run_http(
            s,
            load_contract(s.dataset),
            **common_options(a),
        )
    except Exception as exc:
        fail(exc, "HTTP simulator")
    print(json.dumps(st.as_dict(), indent=1))


if __name__ == "__main__":
    main()
