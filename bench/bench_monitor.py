"""Monitoring benchmark (not a test): report build time, drift statistics throughput, report size.

    python bench/bench_monitor.py            # writes bench/results/monitor.json, prints a table

* report build for 10k- and 100k-row windows logged in the embedded SQLite prediction store
  (load window + feedback, our statistics on every row, Evidently on <= REPORT_MAX_ROWS sampled rows,
  JSON + index), SYNTHETIC customers from the project's generator, a fixed score as the model;
* our drift statistics (PSI + KS/chi2 for 19 features + prediction) over 1,000,000 rows;
* report HTML sizes.
Targets on 2 cores: 10k report <= 10 s; 1M-row drift <= 2 s; report < 10 MB.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from churnops.settings import quiet_process

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ENV_FILE", str(ROOT / "bench" / ".env.bench-does-not-exist"))
quiet_process()  # MLflow telemetry / Prefect analytics off


def score(df: pd.DataFrame) -> np.ndarray:
    z = (
        -0.06 * (df["total_trans_ct"] - 64)
        - 0.0004 * (df["total_revolving_bal"] - 1160)
        - 2.5 * (df["total_ct_chng_q4_q1"] - 0.71)
        + 0.4 * (df["contacts_count_12_mon"] - 2.4)
        - 1.8
    )
    return 1.0 / (1.0 + np.exp(-z.to_numpy(dtype=float)))


def open_store(path: Path):
    try:
        from churnops.store.sqlite import SQLiteStore

        return SQLiteStore(path), "sqlite"
    except ImportError:
        sys.path.insert(0, str(ROOT / "tests"))
        from tests.support.memory_store import MemoryStore

        return MemoryStore(), "memory"


def log_rows(store, clean: pd.DataFrame, contract, end: float, hours: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = len(clean)
    ts = np.sort(end - rng.random(n) * hours * 3600 * 0.999)
    probs = score(clean)
    feats = clean[contract.feature_names].astype(object).where(clean[contract.feature_names].notna(), None)
    records = feats.to_dict(orient="records")
    docs, fb = [], []
    for i, (f, p, t) in enumerate(zip(records, probs, ts)):
        rid = f"bench-{seed}-{i}"
        docs.append(
            {
                "_id": rid,
                "ts": float(t),
                "request_id": rid,
                "source": "http",
                "model_run_id": "bench",
                "model_version": "1",
                "route": "champion",
                "features": f,
                "probability": float(p),
                "decision": int(p >= 0.5),
                "latency_ms": 1.0,
            }
        )
        if i % 2 == 0:
            fb.append((rid, int(clean["churn"].iat[i]), float(t) + 1))
    for k in range(0, len(docs), 5000):
        store.insert_predictions(docs[k : k + 5000])
    store.add_feedback_many([{"request_id": rid, "outcome": o, "ts": t} for rid, o, t in fb])


def main() -> None:
    from churnops.cleaning import clean_frame
    from churnops.contract import load_contract
    from churnops.monitoring.drift import Reference, compute_drift
    from churnops.settings import Settings
    from churnops.synthetic import generate_customers
    from reporting.report import build_report

    contract = load_contract("bank_churners")
    ref_frame = clean_frame(generate_customers(5000, seed=101), contract)
    ref_frame["prediction"] = score(ref_frame)
    reference = Reference.from_frame(ref_frame, contract, run_id="bench")
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "note": "SYNTHETIC customers; other work may have been running on the machine",
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        s = Settings(_env_file=None, state_dir=tmp / "state", reports_dir=tmp / "reports")
        # warm-up: the first report of a process pays for importing Evidently/plotly (measured apart)
        store, kind = open_store(tmp / "warm.db")
        log_rows(store, clean_frame(generate_customers(300, seed=3), contract), contract, time.time() - 1, 1.0, seed=3)
        t = time.perf_counter()
        build_report(store, s, contract, window_hours=3, reference=reference, out_dir=tmp / "warm")
        results["first_report_cold_imports_seconds"] = round(time.perf_counter() - t, 2)
        rows.append(
            (
                "first report in a fresh process (300 rows, imports Evidently)",
                f"{results['first_report_cold_imports_seconds']:.2f} s",
                "-",
            )
        )
        store.close()
        for n in (10_000, 100_000):
            store, kind = open_store(tmp / f"pred-{n}.db")
            clean = clean_frame(generate_customers(n, seed=n), contract)
            t = time.perf_counter()
            now = time.time()
            log_rows(store, clean, contract, now - 1, 2.0, seed=n)
            ingest = time.perf_counter() - t
            t = time.perf_counter()
            summary = build_report(store, s, contract, window_hours=3, now=now, reference=reference)
            secs = time.perf_counter() - t
            html = (tmp / "reports" / summary["files"]["html"]).stat().st_size
            q = summary["files"].get("quality_html")
            qsize = (tmp / "reports" / q).stat().st_size if q else None
            results[f"report_{n}"] = {
                "seconds": round(secs, 2),
                "store": kind,
                "rows_window": summary["n_window"],
                "rows_evidently": summary["n"],
                "html_bytes": html,
                "quality_html_bytes": qsize,
                "ingest_seconds": round(ingest, 2),
                "status": summary["status"],
            }
            rows.append(
                (
                    f"report, {n:,}-row window ({kind} store; Evidently on {summary['n']:,})",
                    f"{secs:.2f} s",
                    "<= 10 s" if n == 10_000 else "-",
                )
            )
            rows.append(
                (
                    f"  report HTML / quality HTML size ({n:,})",
                    f"{html / 1e6:.2f} MB / {(qsize or 0) / 1e6:.2f} MB",
                    "< 10 MB",
                )
            )
            store.close()
    big = pd.concat([clean_frame(generate_customers(100_000, seed=7), contract)] * 10, ignore_index=True)
    big["prediction"] = score(big)
    compute_drift(reference, big.head(1000))  # warm-up (imports)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        compute_drift(reference, big)
        times.append(time.perf_counter() - t)
    results["drift_1m"] = {
        "rows": len(big),
        "features": len(contract.features) + 1,
        "seconds_best": round(min(times), 3),
        "seconds_all": [round(x, 3) for x in times],
    }
    rows.append(
        (f"drift stats, {len(big):,} rows x 19 features + prediction", f"{min(times):.2f} s (best of 3)", "<= 2 s")
    )
    from table import save  # bench/table.py: the one results table

    out = save("monitor", results)
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':{w}}  {'value':>22}  target")
    for a, b, c in rows:
        print(f"{a:{w}}  {b:>22}  {c}")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
