"""bench-train: the default 50-trial sweep on the real file, through the real flow and servers.

Starts its own moto and MLflow servers (temporary folders, free ports) and Prefect's test
harness, runs `train_flow` on ../shared/data/bank_churners.csv, then times the sweep engine
alone on one worker and on a two-worker local Dask cluster. Writes bench/results/train.json and
prints a table. Not a test: figures are measured, not asserted.

    python bench/bench_train.py [--trials 50] [--skip-parallel]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "bank_churners.csv"
OUT = ROOT / "bench" / "results" / "train.json"

TARGETS = {"test_auc_roc": ">= 0.993", "sweep_plus_logging_s": "<= 120", "logging_share": "<= 0.15"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--skip-parallel", action="store_true")
    a = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"bench-train needs the real data file at {DATA}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    from churnops.settings import quiet_process

    quiet_process()  # MLflow telemetry / Prefect analytics off here and in the servers started below
    os.environ.update(
        {
            "ENV_FILE": str(tmp / "none"),
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        }
    )
    from ops.localservers import start_mlflow, start_moto

    (tmp / "moto").mkdir(), (tmp / "mlflow").mkdir()
    moto, moto_url = start_moto(tmp / "moto")
    mlf, mlflow_url = start_mlflow(tmp / "mlflow")
    os.environ.update({"AWS_ENDPOINT_URL": moto_url, "MLFLOW_TRACKING_URI": mlflow_url, "N_TRIALS": str(a.trials)})
    result: dict = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "data": str(DATA),
        "n_trials": a.trials,
        "targets": TARGETS,
    }
    try:
        from prefect.testing.utilities import prefect_test_harness

        from churnops.aws import ensure_bucket, ensure_streams
        from churnops.settings import get_settings

        get_settings.cache_clear()
        s = get_settings()
        ensure_bucket(s), ensure_streams(s)
        with prefect_test_harness(server_startup_timeout=120):
            from flows.train_flow import train_flow

            t0 = time.perf_counter()
            summary = train_flow(n_trials=a.trials, data=str(DATA), progress=True)
            flow_wall = time.perf_counter() - t0
        m = summary["test_metrics"]
        sweep_s, log_s = summary["sweep_seconds"], summary["logging_seconds"]
        trial_log_s = summary["trial_logging_seconds"]
        # the sweep's wall time already contains the per-trial logging; model/artifact logging
        # and registration come after it
        total = sweep_s + (log_s - trial_log_s)
        result |= {
            "flow_wall_s": round(flow_wall, 2),
            "sweep_s": round(sweep_s, 2),
            "s_per_trial": round(sweep_s / a.trials, 3),
            "mlflow_logging_s": round(log_s, 2),
            "mlflow_trial_logging_s": round(trial_log_s, 2),
            "sweep_plus_logging_s": round(total, 2),
            "logging_share": round(log_s / total, 4),
            "test_auc_roc": round(m["auc_roc"], 5),
            "test_pr_auc": round(m["pr_auc"], 5),
            "test_f1": round(m["f1"], 5),
            "test_log_loss": round(m["log_loss"], 5),
            "threshold": round(summary["threshold"], 4),
            "onnx_max_abs_diff": summary["onnx_max_abs_diff"],
            "best_params": summary["best_params"],
        }
        if not a.skip_parallel:
            result["parallel"] = parallel_speedup(s, a.trials)
    finally:
        mlf.stop()
        moto.stop()
    from table import save  # bench/table.py: the one results table

    save("train", result)
    print_table(result)


def parallel_speedup(s, n_trials: int) -> dict:
    """The sweep engine alone (no tracking): 1 worker x 1 thread vs 2 Dask workers x 1 thread."""
    import pandas as pd

    from churnops.cleaning import check_raw_frame
    from churnops.contract import load_contract
    from churnops.pipeline import prepare
    from churnops.tuning import SweepConfig, best_trial, run_sweep

    c = load_contract()
    clean, _ = check_raw_frame(pd.read_csv(DATA), c, str(DATA))
    prep = prepare(clean, c, s)
    out = {}
    for label, cfg in (
        ("serial_1_thread", SweepConfig(n_trials=n_trials, seed=s.seed, threads=1, task=prep.task)),
        ("serial_2_threads", SweepConfig(n_trials=n_trials, seed=s.seed, threads=2, task=prep.task)),
        (
            "dask_2_workers",
            SweepConfig(n_trials=n_trials, seed=s.seed, executor="dask", dask_workers=2, task=prep.task),
        ),
    ):
        t0 = time.perf_counter()
        trials = run_sweep(prep.split, cfg)
        out[label] = {
            "wall_s": round(time.perf_counter() - t0, 2),
            "best_val_auc": round(best_trial(trials).metrics["auc_roc"], 5),
            "fit_s_sum": round(sum(t.fit_seconds for t in trials), 2),
        }
    out["speedup_dask2_vs_1_worker"] = round(out["serial_1_thread"]["wall_s"] / out["dask_2_workers"]["wall_s"], 2)
    out["note"] = (
        "Dask gets one TPE suggestion per free worker as soon as a trial ends, so its trial sequence differs from the serial "
        "one; wall time includes starting the local cluster."
    )
    return out


def print_table(r: dict) -> None:
    rows = [
        ("trials", r["n_trials"], ""),
        ("sweep wall (s)", r.get("sweep_s"), ""),
        ("seconds per trial", r.get("s_per_trial"), ""),
        ("MLflow logging (s)", r.get("mlflow_logging_s"), ""),
        ("sweep + logging (s)", r.get("sweep_plus_logging_s"), TARGETS["sweep_plus_logging_s"]),
        ("logging share", r.get("logging_share"), TARGETS["logging_share"]),
        ("test AUC-ROC", r.get("test_auc_roc"), TARGETS["test_auc_roc"]),
        ("test PR-AUC", r.get("test_pr_auc"), ""),
        ("test F1 @ threshold", r.get("test_f1"), ""),
        ("test log loss", r.get("test_log_loss"), ""),
        ("ONNX max |diff|", r.get("onnx_max_abs_diff"), "<= 1e-4"),
    ]
    p = r.get("parallel")
    if p:
        rows += [(f"engine {k} wall (s)", v["wall_s"], "") for k, v in p.items() if isinstance(v, dict)]
        rows.append(("speed-up dask 2 workers vs 1", p["speedup_dask2_vs_1_worker"], ""))
    print(f"\n{'bench-train':34s} {'value':>14s}  target")
    for name, v, t in rows:
        print(f"{name:34s} {v!s:>14s}  {t}")
    print(f"-> {OUT}")


if __name__ == "__main__":
    main()
