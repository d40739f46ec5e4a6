"""`make simulate`: run the HTTP and the Kinesis simulators together for a bounded time.

    python -m simulators.run --seconds 20 [--rate 20] [--drift shift,category,missing,concept]
                             [--drift-mode sudden|gradual] [--only http|kinesis]

With DATASET=<image contract> (raw_digits) it sends simulated camera captures instead, and
`--drift` (SIMULATE_DRIFT) takes the camera drifts noise,white_balance,exposure (simulators/camera.py).

Prints what was sent: counts by path and status, feedback posted, drift applied.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from churnops.cli import setup_logging
from churnops.contract import load_any_contract
from churnops.settings import get_settings
from simulators.camera import parse_camera_drift, run_camera_http, run_camera_kinesis
from simulators.http_sim import add_common_args, run_http
from simulators.kinesis_sim import run_kinesis
from simulators.traffic import customer_pool, parse_drift


def main(argv: list[str] | None = None) -> int:

    s = get_settings()
    p = argparse.ArgumentParser(description="run the business simulators (HTTP + Kinesis) for a bounded time")
    add_common_args(p, s)
    p.add_argument("--only", choices=["http", "kinesis"], default=None)
    p.add_argument("--stream", default=s.input_stream)
    p.add_argument("--json", action="store_true", help="print the summary as JSON only")
    a = p.parse_args(argv)
    setup_logging()
    contract = load_any_contract(s.dataset)
    image = getattr(contract, "task", None) == "image_classification"  # image hook: camera captures, camera drift
    try:
        drift = parse_camera_drift(a.drift) if image else parse_drift(a.drift)
    except ValueError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    if image:
        pool, where = None, "raw digits (simulated camera)"
        send_http, send_kinesis = run_camera_http, run_camera_kinesis
    else:
        pool, where = customer_pool(s, contract, a.source, a.seed)
        send_http, send_kinesis = run_http, run_kinesis
    common = dict(
        rate=a.rate,
        seconds=a.seconds,
        count=a.count,
        seed=a.seed,
        drift=drift,
        drift_mode=a.drift_mode,
        feedback_delay_s=a.feedback_delay,
        feedback=not a.no_feedback,
        api_url=a.api_url,
        pool=pool,
        allow_remote=a.allow_remote,
        onset=a.onset,
    )
    results: dict[str, dict] = {}
    stop = threading.Event()

    def job(name, fn, **kw):
        try:
            st = fn(s, contract, stop=stop.is_set, **common, **kw)
            results[name] = st.as_dict()
        except Exception as exc:
            results[name] = {"name": name, "error": f"{type(exc).__name__}: {exc}"}

    threads = []
    if a.only in (None, "http"):
        threads.append(threading.Thread(target=job, args=("http", send_http), daemon=True))
    if a.only in (None, "kinesis"):
        threads.append(
            threading.Thread(target=job, args=("kinesis", send_kinesis), kwargs={"stream": a.stream}, daemon=True)
        )
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join(10)
    summary = {"customers": where, "drift": drift or "none", "drift_mode": a.drift_mode, "results": results}
    if a.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"customers: {where}")
        print(f"drift: {', '.join(drift) or 'none'} ({a.drift_mode})")
        for name, r in results.items():
            if "error" in r:
                print(f"[{name}] ERROR {r['error']}")
                continue
            print(
                f"[{name}] sent {r['sent']}/{r['planned']} in {r['seconds']} s; feedback posted {r['feedback_sent']}"
                f" (pending {r['feedback_pending']}); rows changed by drift {r['drift']['rows_changed']}"
            )
            for k, v in sorted(r["counts"].items()):
                print(f"    {k:40s} {v}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
