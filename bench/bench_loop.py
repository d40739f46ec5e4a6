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

Also measures the estimated performance (CBPE, before labels) against the realized AUC per window,
under a covariate shift and under the concept drift (`estimated_vs_realized`).

Then the image section (bench/loop_image.py, `image` in loop.json): camera drift -> /feedback labels
-> a new image data set version naming its parent -> retrain -> rules -> promotion -> served; the
served model's accuracy before the drift, after it and after the loop, and seconds from trigger to
serving. `--image-only` runs that section alone and keeps the tabular figures of loop.json.

    python bench/bench_loop.py [--trials 10] [--rows 4000] [--policy replace] [--estimated-only]
                               [--image-only | --no-image] [--image-trials 2] [--image-epochs 5]
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

# bench/ is on sys.path when run as a script: the image section and the one results table
from loop_image import DRIFT  # noqa: E402
from loop_image import run as run_image_loop  # noqa: E402
from table import commit, save  # noqa: E402


def traffic(pool, contract, n, seed, drift):
    """(clean feature frame, true outcomes) of `n` customers, with the concept drift when asked."""
    import numpy as np

    from simulators.traffic import apply_drift

    rng = np.random.default_rng(seed)
    rows = pool.sample(n, replace=True, random_state=seed).reset_index(drop=True)
    df, outcome, _ = apply_drift(rows, ["concept"] if drift else [], np.ones(n), rng, contract.target.name)
    return df, outcome


def estimated_vs_realized(pool, contract, s, bundle, reference, rows: int) -> dict:
    """CBPE (churnops.monitoring.estimated) against the realized AUC, window by window.

    Covariate shift: held-out customers (the training run's own test split, so the model never saw
    them) resampled with weights exp(k * z) on one standardized feature: P(y | x) unchanged, where
    the method should hold (goal |error| <= 0.02). Concept drift: the loop's drifted traffic (the
    outcome of a segment flipped), where the calibration no longer describes the labels."""
    import numpy as np

    from churnops.metrics import auc_roc
    from churnops.monitoring.estimated import estimate_performance

    task_y = pool[contract.target.name].to_numpy().astype(int)
    _, _, te = bundle_split(task_y, s)
    held = pool.iloc[te].reset_index(drop=True)

    def score(df):
        return bundle.predict_matrix(bundle.encoder.transform_frame(df))

    def window(df, y, label):
        p = score(df)
        est = estimate_performance(p, reference.calibration, reference.threshold, min_rows=100, seed=0)
        real = auc_roc(y, p)
        return {
            "window": label,
            "n": int(len(y)),
            "realized_auc": real,
            "estimated_auc": est.get("auc_roc"),
            "band": est.get("auc_band"),
            "error": None if est.get("auc_roc") is None or real is None else est["auc_roc"] - real,
            "unavailable": None if est.get("available") else est.get("message"),
        }

    cov = []
    for i, (feature, k) in enumerate(
        [
            ("total_trans_ct", 0.0),
            ("total_trans_ct", 1.0),
            ("total_trans_ct", -1.0),
            ("customer_age", 1.5),
            ("total_revolving_bal", -1.5),
            ("credit_limit", 1.5),
        ]
    ):
        z = held[feature].astype(float)
        z = ((z - z.mean()) / z.std()).fillna(0.0).to_numpy()
        w = np.exp(k * z)
        rows_i = held.sample(rows, replace=True, weights=w / w.sum(), random_state=100 + i).reset_index(drop=True)
        cov.append(window(rows_i, rows_i[contract.target.name].to_numpy().astype(int), f"{feature} k={k:+.1f}"))
    concept = []
    for seed in (21, 22, 23):
        df, y = traffic(held, contract, rows, seed, True)
        concept.append(window(df, np.asarray(y).astype(int), f"concept drift seed {seed}"))
    errs = [abs(w["error"]) for w in cov if w["error"] is not None]
    cerrs = [abs(w["error"]) for w in concept if w["error"] is not None]
    return {
        "method": "CBPE, isotonic calibration on the run's held-out test split (churnops.monitoring.estimated)",
        "goal_abs_error": 0.02,
        "covariate_shift": cov,
        "covariate_max_abs_error": max(errs) if errs else None,
        "covariate_mean_abs_error": float(np.mean(errs)) if errs else None,
        "concept_drift": concept,
        "concept_mean_abs_error": float(np.mean(cerrs)) if cerrs else None,
        "note": "windows resample the held-out test rows (few, ~1,500 customers): the covariate windows repeat "
        "customers; under concept drift the estimate keeps the old P(y|x) and cannot see the flip",
        "nannyml": "not compared: no separate NannyML venv in this round",
    }


def bundle_split(y, s):
    """The training run's split (`churnops.pipeline.prepare`: same task split, test size and seed)."""
    from churnops.tasks import task_for

    return task_for(None).split(y, s.test_size, s.val_size, s.seed)


def image_section(a) -> dict:
    """The image loop (bench/loop_image.py) on its own servers, stamped with when and what it measured."""
    from churnops.settings import get_settings

    stamp = {"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit()}
    out = stamp | run_image_loop(
        a.image_trials, a.image_epochs, a.image_train, a.image_rows, [k for k in a.image_drift.split(",") if k]
    )
    get_settings.cache_clear()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--rows", type=int, default=4000, help="drifted predictions with outcomes before the trigger")
    ap.add_argument("--policy", default="replace", choices=["append", "sliding", "replace"])
    ap.add_argument("--estimated-only", action="store_true", help="only the estimated-vs-realized AUC section")
    ap.add_argument("--image-only", action="store_true", help="only the image section (tabular figures kept)")
    ap.add_argument("--no-image", action="store_true", help="skip the image section")
    ap.add_argument("--image-trials", type=int, default=2)
    ap.add_argument("--image-epochs", type=int, default=5, help="the image sweep's most epochs")
    ap.add_argument("--image-train", type=int, default=900, help="digits the first image model is trained on")
    ap.add_argument("--image-rows", type=int, default=500, help="drifted captures labelled before the trigger")
    ap.add_argument("--image-drift", default=",".join(DRIFT), help="camera drift kinds (simulators.camera)")
    a = ap.parse_args()
    if a.image_only:
        result = json.loads(OUT.read_text()) if OUT.exists() else {}
        result["image"] = image_section(a)
        save("loop", result)  # the tabular section and its stamp stay as they were measured
        print(
            json.dumps({k: result["image"].get(k) for k in ("accuracy", "recovered_share_of_lost_accuracy", "seconds")})
        )
        return
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
    from ops.localservers import start_mlflow, start_moto

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

        from churnops.aws import ensure_bucket, ensure_streams
        from churnops.cleaning import clean_frame
        from churnops.contract import load_contract
        from churnops.evaluation import auc
        from churnops.model_line import for_dataset
        from churnops.settings import get_settings
        from churnops.store.factory import open_store
        from flows.labels_flow import labels_collector
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
            result["first_model_test_auc"] = first["test_metrics"]["auc_roc"]  # the held-out rows' AUC
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
            if os.environ.get("BENCH_LOOP_ESTIMATED", "1") != "0":
                from churnops.monitoring.reference import load_reference

                champ = server.current.champion
                result["estimated_performance"] = estimated_vs_realized(
                    pool, contract, s, champ.bundle, load_reference(champ.run_id, s, contract), 2000
                )
                print(json.dumps({k: v for k, v in result["estimated_performance"].items() if "error" in k}))
            if a.estimated_only:
                result["note"] = "--estimated-only: the retraining loop was not run"
            else:
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
                    start_training=default_start_training(s, labels_collector(s), run=run_inline),
                    alert=False,
                )
                store.close()
                t_trained = time.perf_counter()
                while (
                    server.current.champion.version != trained.get("version") and time.perf_counter() - t_trained < 120
                ):
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
    if not (a.estimated_only or a.no_image):
        result["image"] = image_section(a)
    save("loop-estimated" if a.estimated_only else "loop", result)  # a partial run never replaces loop.json
    r = result.get("realized_auc", {})
    print(json.dumps(r), result.get("seconds"), f"-> {OUT.with_stem('loop-estimated') if a.estimated_only else OUT}")


if __name__ == "__main__":
    main()
