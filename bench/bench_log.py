"""Prediction-log micro-benchmark (not a test): what the journal costs the request thread.

    python bench/bench_log.py          # writes bench/results/log.json, prints the figures

Per single prediction: `PredictionLog.submit` of a real record (the contract's example, 19
features) into a SQLite-backed log, without and with the journal (one os.write to the page cache
per record before the answer); per batch row: `submit_batch` of 1,000-row batches. The writer
thread runs as in the servers (0.5 s interval). Measured as the request thread's CPU time
(user + system, `time.thread_time`), which a shared machine's load does not inflate. Best of 7 runs of 20,000 records / 50 batches (the least disturbed on a shared machine).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "log.json"


def record(i: int, features: dict) -> dict:
    return {
        "_id": f"{i:032x}",
        "ts": time.time(),
        "request_id": f"req-{i}",
        "source": "http",
        "model_run_id": "r" * 32,
        "model_version": "3",
        "route": "champion",
        "features": features,
        "probability": 0.123456789,
        "decision": 0,
        "latency_ms": 0.5,
    }


def batch(n: int, features: dict):
    from churnops.store.base import PredictionBatch
    from serving.inference import new_request_ids

    ids = new_request_ids(n)
    return PredictionBatch(
        const={
            "ts": time.time(),
            "source": "http",
            "model_run_id": "r" * 32,
            "model_version": "3",
            "route": "champion",
            "latency_ms": 0.01,
            "batch": True,
        },
        cols={
            "_id": new_request_ids(n),
            "request_id": ids,
            "probability": np.random.rand(n),
            "decision": np.zeros(n, dtype=np.int64),
        },
        features={k: ([v] * n if isinstance(v, str) else np.full(n, float(v))) for k, v in features.items()},
    )


def run(journal: bool, kind: str, features: dict) -> float:
    """CPU microseconds per record in the request thread (thread CPU time: steady on a busy machine)."""
    from churnops.store.sqlite import SQLiteStore
    from serving.prediction_log import PredictionLog

    with tempfile.TemporaryDirectory() as d:
        plog = PredictionLog(
            SQLiteStore(Path(d) / "p.db"), Path(d) / "spool", journal=journal, wake_records=20_000
        ).start()
        try:
            if kind == "single":
                recs = [record(i, features) for i in range(20_000)]
                t0 = time.thread_time()
                for r in recs:
                    plog.submit(r)
                dt, n = time.thread_time() - t0, len(recs)
            else:
                bs = [batch(1000, features) for _ in range(50)]
                t0 = time.thread_time()
                for b in bs:
                    plog.submit_batch(b)
                dt, n = time.thread_time() - t0, 50 * 1000
        finally:
            plog.close()
    return dt / n * 1e6


def main() -> dict:
    from churnops.contract import load_contract

    contract = load_contract("bank_churners")
    features = contract.validator().validate(contract.example).values
    out = {"machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    for kind in ("single", "batch_row"):
        for journal in (False, True):
            runs = [run(journal, "single" if kind == "single" else "batch", features) for _ in range(7)]
            out[f"{kind}_us_{'journal' if journal else 'memory_only'}"] = round(min(runs), 3)
    with tempfile.TemporaryDirectory() as d:  # the journal's one syscall alone, for scale
        fd = os.open(Path(d) / "j", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        line = b"x" * 700  # about one single-prediction record
        t0 = time.thread_time()
        for _ in range(20_000):
            os.write(fd, line)
        out["os_write_700_bytes_us"] = round((time.thread_time() - t0) / 20_000 * 1e6, 3)
        os.close(fd)
    for kind in ("single", "batch_row"):
        out[f"{kind}_journal_extra_us"] = round(out[f"{kind}_us_journal"] - out[f"{kind}_us_memory_only"], 3)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
