"""Kinesis business simulator: JSON `{"request_id", "features"}` into the input stream
(`predictions`), outcomes to the API's `POST /feedback` after a delay.

    python -m simulators.kinesis_sim --seconds 20 --rate 20 --drift missing
"""

from __future__ import annotations

import argparse
import json

from churnops.aws import client as aws_client
from churnops.cli import fail, setup_logging
from churnops.contract import load_contract
from churnops.settings import get_settings
from simulators.http_sim import add_common_args, common_options
from simulators.traffic import (
    FeedbackSender,
    Planned,
    RunStats,
    check_loopback,
    customer_pool,
    plan_records,
    planned_count,
    run_paced,
)


def run_kinesis(
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
    stream: str | None = None,
    pool=None,
    source: str = "auto",
    stop=lambda: False,
    allow_remote: bool = False,
    onset: float = 0.0,
) -> RunStats:
    api = (api_url or settings.api_url).rstrip("/")
    check_loopback(settings.aws_endpoint_url, "AWS endpoint", allow_remote)
    if feedback:
        check_loopback(api, "API", allow_remote)
    stream = stream or settings.input_stream
    if pool is None:
        pool, where = customer_pool(settings, contract, source, seed + 1)
    else:
        where = "given pool"
    n = planned_count(rate, seconds, count)
    records, changed = plan_records(pool, contract, n, seed + 1, drift, drift_mode, onset, prefix="kin")
    stats = RunStats(
        "kinesis",
        drift={"kinds": drift, "mode": drift_mode, "rows_changed": changed, "customers": where, "stream": stream},
    )
    kin = aws_client("kinesis", settings)
    fb = FeedbackSender(api) if feedback else None

    def send(batch: list[Planned]):
        entries = [
            {
                "Data": json.dumps({"request_id": r.request_id, "features": r.features}).encode(),
                "PartitionKey": r.request_id,
            }
            for r in batch
        ]
        try:
            resp = kin.put_records(StreamName=stream, Records=entries)
        except Exception as exc:
            return [(r, f"kinesis put error:{type(exc).__name__}", False) for r in batch]
        out = []
        for r, res in zip(batch, resp["Records"]):
            ok = "ErrorCode" not in res or not res.get("ErrorCode")
            out.append((r, "kinesis put ok" if ok else f"kinesis put {res['ErrorCode']}", ok))
        return out

    try:
        return run_paced(
            records, send, stats, rate, None if count else seconds, fb, feedback_delay_s, stop, max_batch=500
        )
    finally:
        if fb:
            fb.close()


def main() -> None:
    s = get_settings()
    p = argparse.ArgumentParser(description="Kinesis traffic simulator")
    add_common_args(p, s)
    p.add_argument("--stream", default=s.input_stream)
    a = p.parse_args()
    setup_logging()
    try:
        st = run_kinesis(
            s,
            load_contract(s.dataset),
            stream=a.stream,
            **common_options(a),
        )
    except Exception as exc:
        fail(exc, "Kinesis simulator")
    print(json.dumps(st.as_dict(), indent=1))


if __name__ == "__main__":
    main()
