"""bench-loop: the closed loop on the real file, measured.

Starts its own moto and MLflow servers and Prefect's test harness, trains a champion on
../shared/data/bank_churners.csv, then serves traffic sampled from the same customers:
first unchanged, then with a concept drift on a segment (the true outcome of low-income
customers flipped, simulators.traffic `concept`) and its delayed outcomes logged as feedback.
The retraining trigger (realized AUC below the floor) collects the labels into a new snapshot
(LABEL_POLICY, default replace), trains on it, the rules run, approval is automatic
(AUTO_APPROVE=true, the headless path), and a server following `@champion` swaps models.
Writes bench/results/loop.json: realized AUC before the drift, after it, and after the loop
promoted the retrained model (on fresh drifted traffic); seconds from trigger to serving.
Not a test: the figures are measured and reported whatever they are.

    python bench/bench_loop.py [--trials 10] [--rows 4000] [--policy replace]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "bank_churners.csv"
OUT = ROOT / "bench" / "results" / "loop.json"


def traffic(pool, contract, n, seed, drift):
    """(clean feature frame, true outcomes) of `n` customers, with the concept drift when asked."""
    import numpy as np

    from simulators.traffic import apply_drift

    rng = np.random.default_rng(seed)
    rows = pool.sample(n, replace=True, random_state=seed).reset_index(drop=True)
    df, outcome, _ = apply_drift(rows, ["concept"] if drift else [], np.ones(n), rng, contract.target.name)
    return df, outcome


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--rows", type=int, default=4000, help="drifted predictions with outcomes before the trigger")
    ap.add_argument("--policy", default="replace", choices=["append", "sliding", "replace"])
    a = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"bench-loop needs the real data file at {DATA}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    os.environ.update(
        {
            "ENV_FILE": str(tmp / "none"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
            "STATE_DIR": str(tmp / "state"),
            "AUTO_APPROVE": "true",
            "LABEL_POLICY": a.policy,
            "N_TRIALS": str(a.trials),
            "ALIAS_POLL_S": "1",
        }
    )
    from churnops.localservers import start_mlflow, start_moto

    (tmp / "moto").mkdir(), (tmp / "mlflow").mkdir()
    moto, moto_url = start_moto(tmp / "moto")
    mlf, mlflow_url = start_mlflow(tmp / "mlflow")
    os.environ.update({"AWS_ENDPOINT_URL": moto_url, "MLFLOW_TRACKING_URI": mlflow_url})
    result: dict = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "data": str(DATA),
        "n_trials": a.trials,
        "drifted_rows_labelled": a.rows,
        "label_policy": a.policy,
        "drift": "concept: true outcome of income_category 'less than $40k' flipped (simulators.traffic)",
        "traffic": "customers sampled with replacement from the real file (the population trained on)",
    }
    try:
        import numpy as np
        import pandas as pd
        from prefect.testing.utilities import prefect_test_harness

        from churnops.cleaning import clean_frame
        from churnops.contract import load_contract
        from churnops.model_line import for_dataset
        from churnops.pipeline import auc
        from churnops.provision import ensure_bucket, ensure_streams
        from churnops.settings import get_settings
        from churnops.store.factory import open_store
        from reporting.trigger import default_start_training, evaluate_trigger
        from serving.model import ModelManager

        get_settings.cache_clear()
        s = for_dataset(get_settings())  # the data set's line: its model name
        ensure_bucket(s), ensure_streams(s)
        contract = load_contract(s.dataset)
        pool = clean_frame(pd.read_csv(DATA), contract)
        with prefect_test_harness(server_startup_timeout=120):
            from flows.train_flow import train_flow

            first = train_flow(n_trials=a.trials, data=str(DATA), data_profile=False)
            server = ModelManager(s.model_copy(update={"model_uri": f"models:/{s.model_name}@champion"}))
            server.freeze_gc = False
            server.load_initial()

            def realized(n, seed, drift):
                df, y = traffic(pool, contract, n, seed, drift)
                p = server.current.champion.bundle.predict_matrix(
                    server.current.champion.bundle.encoder.transform_frame(df)
                )
                return df, y, p, auc(y, p)

            _, _, _, auc_before = realized(3000, 1, False)
            df, y, p, auc_after = realized(a.rows, 2, True)
            now = time.time()
            store = open_store(s)
            preds, fb = [], []
            for i, row in enumerate(df[contract.feature_names].to_dict("records")):
                rid = f"loop-{i}"
                feats = {
                    k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else v) for k, v in row.items()
                }
                preds.append(
                    {
                        "_id": rid,
                        "request_id": rid,
                        "ts": now - 600 + i * 0.01,
                        "source": "http",
                        "model_run_id": server.current.champion.run_id,
                        "model_version": server.current.champion.version,
                        "route": "champion",
                        "features": feats,
                        "probability": float(p[i]),
                        "decision": int(p[i] >= server.current.champion.threshold),
                        "latency_ms": 1.0,
                    }
                )
                fb.append({"request_id": rid, "outcome": int(y[i]), "ts": now - 300 + i * 0.01})
            store.insert_predictions(preds)
            store.add_feedback_many(fb)

            class Run:
                id = "inline"

            trained: dict = {}

            def run_inline(name, timeout=0, tags=None, parameters=None):  # the deployment, run in this process
                trained.update(train_flow(n_trials=a.trials, data_profile=False, **(parameters or {})))
                return Run()

            t0 = time.perf_counter()
            decision = evaluate_trigger(
                store,
                s,
                None,
                {"overall": {"auc_roc": auc_after, "n": a.rows}},
                start_training=default_start_training(s, run=run_inline),
                alert=False,
            )
            store.close()
            t_trained = time.perf_counter()
            while server.current.champion.version != trained.get("version") and time.perf_counter() - t_trained < 120:
                server.follow_alias()
                time.sleep(0.2)
            t_served = time.perf_counter()
            _, _, _, auc_loop = realized(3000, 3, True)
            result.update(
                {
                    "first_model": {"version": first["version"], "test_auc_roc": first["test_metrics"]["auc_roc"]},
                    "trigger": {k: decision.get(k) for k in ("action", "reasons", "parameters")},
                    "retrained": {
                        "version": trained.get("version"),
                        "outcome": trained.get("outcome"),
                        "test_auc_roc": (trained.get("test_metrics") or {}).get("auc_roc"),
                        "rules": trained.get("rules"),
                    },
                    "serving_version_after": server.current.champion.version,
                    "realized_auc": {"before_drift": auc_before, "after_drift": auc_after, "after_loop": auc_loop},
                    "recovered_share_of_lost_auc": (auc_loop - auc_after) / (auc_before - auc_after)
                    if auc_before > auc_after
                    else None,
                    "seconds": {
                        "trigger_to_trained": t_trained - t0,
                        "trained_to_serving": t_served - t_trained,
                        "trigger_to_serving": t_served - t0,
                    },
                }
            )
    finally:
        moto.stop(), mlf.stop()
    from table import save  # bench/table.py: the one results table

    save("loop", result)
    r = result.get("realized_auc", {})
    print(json.dumps(r), result.get("seconds"), f"-> {OUT}")


if __name__ == "__main__":
    main()
