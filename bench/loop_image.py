"""bench-loop, image section: camera drift -> labels -> new data set version -> retrain -> rules -> promotion -> serving.

On its own moto and MLflow servers and Prefect's test harness (called by bench_loop.py, which also
runs it alone with --image-only): the raw-digits CNN is trained on the first `train` digits
(v1, champion) and served by the real Flask app (uploads kept, following `@champion`). Digits the
model never saw are sent through the simulated camera (simulators.camera.capture): the evaluation
digits with the nominal camera (accuracy before the drift), then `rows` digits with the camera
drifted (`drift` kinds at strength 1) whose true classes go to /feedback, then the evaluation
digits again through the drifted camera (accuracy after the drift). The retraining trigger
(reporting.trigger, as the retrain-trigger flow runs it) joins the labels to the kept uploads, publishes
a new image data set version naming its parent, and starts the image training deployment (run here
in this process); the shipped rules (churnops/rules/image_classification.yaml) run and approval is
automatic (AUTO_APPROVE=true). Once the server follows `@champion` to the new version the
evaluation digits are sent through the drifted camera once more (accuracy after the loop).
Figures are measured and reported, never asserted.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path

DRIFT = ("noise", "white_balance", "exposure")
GOAL = 0.9  # share of the lost accuracy the loop should recover
SEED = 11  # the camera's noise seed for every capture


def captures(contract, indices, kinds: list[str]) -> list[tuple[bytes, int]]:
    """(DNG bytes, true class index) of the digits `indices` through the camera, drifted by `kinds`."""
    from simulators.camera import capture

    return [capture(i, contract, SEED, kinds, 1.0 if kinds else 0.0) for i in indices]


def accuracy(http, shots: list[tuple[bytes, int]], prefix: str) -> tuple[float, list[str]]:
    """(accuracy, model versions that answered) of `POST /predict/image` on `shots`."""
    hits, versions = 0, set()
    for i, (body, label) in enumerate(shots):
        r = http.post(
            "/predict/image",
            data=body,
            headers={"Content-Type": "image/x-adobe-dng", "X-Request-ID": f"{prefix}-{i}"},
        )
        if r.status_code != 200:
            raise RuntimeError(f"/predict/image answered {r.status_code}: {r.get_data(as_text=True)[:300]}")
        hits += int(r.json["class_index"] == label)
        versions.add(str(r.json["model_version"]))
    return hits / len(shots), sorted(versions)


def run(trials: int, epochs: int, train: int, rows: int, drift: list[str]) -> dict:
    """The image loop on fresh servers; returns the `image` section of loop.json."""
    try:
        import torch  # noqa: F401  (the image extra)
    except ImportError:
        return {"skipped": "the image extra is not installed (pip install -e .[image])"}
    tmp = Path(tempfile.mkdtemp(prefix="bench-loop-image-"))
    os.environ.update(
        {
            "ENV_FILE": str(tmp / "none"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
            "STATE_DIR": str(tmp / "state"),
            "DATASET": "raw_digits",
            "BUCKET": f"loop-image-{uuid.uuid4().hex[:8]}",
            "AUTO_APPROVE": "true",
            "IMAGE_KEEP_UPLOADS": "true",
            "LABEL_MIN_ROWS": "50",
            "REPORT_MIN_ROWS": "50",
            "ALIAS_POLL_S": "1",
            "RETRAIN_COOLDOWN_HOURS": "1",
        }
    )
    for k in ("MODEL_NAME", "EXPERIMENT_NAME", "MODEL_URI", "RUN_ID"):
        os.environ.pop(k, None)  # the contract names the model line
    from ops.localservers import start_mlflow, start_moto

    (tmp / "moto").mkdir(), (tmp / "mlflow").mkdir()
    moto, moto_url = start_moto(tmp / "moto")
    mlf, mlflow_url = start_mlflow(tmp / "mlflow")
    os.environ.update({"AWS_ENDPOINT_URL": moto_url, "MLFLOW_TRACKING_URI": mlflow_url})
    try:
        return loop(trials, epochs, train, rows, drift)
    finally:
        moto.stop(), mlf.stop()


def loop(trials: int, epochs: int, train: int, rows: int, drift: list[str]) -> dict:
    """The measured loop (servers already up, settings in the environment)."""
    from prefect.testing.utilities import prefect_test_harness

    from churnops.aws import ensure_bucket
    from churnops.contract import load_any_contract
    from churnops.model_line import for_dataset
    from churnops.settings import get_settings
    from churnops.store.factory import open_store
    from flows.labels_flow import labels_collector
    from reporting.trigger import default_start_training, evaluate_window
    from serving.app import create_app
    from serving.model import ModelManager

    get_settings.cache_clear()
    s = for_dataset(get_settings())
    ensure_bucket(s)
    contract = load_any_contract(s.dataset)
    total = 1797  # scikit-learn's digits
    labelled = range(train, min(train + rows, total))
    held = range(labelled.stop, total)  # never trained on, never labelled: the accuracy figures
    out: dict = {
        "data": f"raw_digits (simulated camera): first model on digits 0..{train - 1}; {len(labelled)} drifted "
        f"captures labelled; accuracy on the {len(held)} digits {held.start}..{total - 1} (never trained on)",
        "drift": f"camera drift {','.join(drift)} at strength 1 (simulators.camera), the DNG stating the nominal camera",
        "n_trials": trials,
        "max_epochs": epochs,
        "rules": "churnops/rules/image_classification.yaml (shipped), AUTO_APPROVE=true",
        "goal_recovered_share": GOAL,
    }
    with prefect_test_harness(server_startup_timeout=120):
        from flows.image_train_flow import image_train_flow

        first = image_train_flow(contract=s.dataset, n_trials=trials, limit=train, max_epochs=epochs)
        out["first_model"] = {"version": str(first["version"]), "outcome": first["outcome"], **first["test_metrics"]}
        mm = ModelManager(s.model_copy(update={"model_uri": f"models:/{s.model_name}@champion"}))
        mm.freeze_gc = False
        mm.load_initial()
        store = open_store(s)
        app = create_app(mm.settings, store=store, models=mm, start_background=False)
        plog = app.extensions["churn"].plog
        plog.start()
        http = app.test_client()
        try:
            acc_before, _ = accuracy(http, captures(contract, held, []), "before")
            shots = captures(contract, labelled, drift)
            realized, _ = accuracy(http, shots, "drifted")
            for i, (_, label) in enumerate(shots):
                r = http.post("/feedback", json={"request_id": f"drifted-{i}", "outcome": contract.classes[label]})
                if r.status_code != 202:
                    raise RuntimeError(f"/feedback answered {r.status_code}: {r.get_data(as_text=True)[:300]}")
            drifted_held = captures(contract, held, drift)
            acc_drift, _ = accuracy(http, drifted_held, "after-drift")
            plog.flush()

            trained: dict = {}

            class Run:
                id = "inline"

            def run_inline(name, timeout=0, tags=None, parameters=None):  # the deployment, run in this process
                trained.update(image_train_flow(**(parameters or {}), n_trials=trials, max_epochs=epochs))
                return Run()

            t0 = time.perf_counter()
            trigger_store = open_store(s)  # what the retrain-trigger flow does, its starter run in this process
            try:
                decision = evaluate_window(
                    trigger_store,
                    s,
                    contract,
                    window_hours=1,
                    start_training=default_start_training(s, labels_collector(s), run=run_inline),
                )
            finally:
                trigger_store.close()
            t_trained = time.perf_counter()
            promoted = trained.get("outcome") == "promoted"  # else the first model keeps serving
            while promoted and mm.current.champion.version != str(trained["version"]):
                if time.perf_counter() - t_trained > 120:
                    raise TimeoutError(f"the server did not follow @champion to v{trained['version']} in 120 s")
                if not mm.follow_alias():
                    time.sleep(0.2)
            t_served = time.perf_counter()
            acc_loop, served = accuracy(http, drifted_held, "after-loop")
        finally:
            plog.close()
            store.close()
    lost = acc_before - acc_drift
    out |= {
        "trigger": {k: decision.get(k) for k in ("action", "reasons", "parameters")},
        "realized_accuracy_labelled_window": realized,
        "retrained": {
            "version": None if trained.get("version") is None else str(trained["version"]),
            "outcome": trained.get("outcome"),
            "dataset_uri": trained.get("dataset_uri"),
            "parent_dataset": trained.get("parent_dataset"),
            "images": trained.get("images"),
            "test_accuracy": (trained.get("test_metrics") or {}).get("accuracy"),
            "failed_rules": [r["name"] for r in trained.get("rules") or [] if not r["passed"]],
        },
        "serving_version_after": served,
        "accuracy": {"before_drift": acc_before, "after_drift": acc_drift, "after_loop": acc_loop},
        "recovered_share_of_lost_accuracy": (acc_loop - acc_drift) / lost if lost > 0 else None,
        "seconds": {
            "trigger_to_trained": t_trained - t0,
            "trained_to_serving": t_served - t_trained,
            "trigger_to_serving": t_served - t0,
        },
    }
    return out
