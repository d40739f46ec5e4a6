"""Training steps of the image track; `flows/image_train_flow.py` runs them as Prefect tasks.

data (generate the raw digits or take a folder) -> SHA-256 version -> ISP -> stratified split ->
hyperopt TPE sweep over learning rate, width, epochs, augmentation (each trial a nested MLflow run
of the sweep's parent run; `IMAGE_STANDARD_MIX` of every batch are PNG/JPEG renders of the same
images, churnops.image.standard) -> refit the best on train+val -> test metrics -> ISP sensitivity
-> standard-images accuracy -> ONNX export with the parity gate -> int8 quantization with its own
gate (churnops.image.quantize) -> log ONE model (+ `model_int8.onnx` when it passed, +
`image_reference.json`, the image drift reference of `churnops.image.monitor`) -> register under
the contract's model name.
Nothing is registered unless every step before succeeded. MLflow helpers are the project's own
(`pipeline.start_parent_run`, `pipeline.Timer`, `lineage.lineage_tags`, `registry.register`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from churnops.image.analysis import VARIATIONS, develop
from churnops.image.contract import ImageContract
from churnops.image.dataset import (
    RAW_SUFFIXES,
    ImageFile,
    dataset_sha256,
    list_images,
    load_arrays,
    read_raw,
    stratified_split,
)
from churnops.image.quantize import INT8_ARTIFACT, REPORT_ARTIFACT, QuantizationGateError, gate, quantize
from churnops.image.sensor import generate
from churnops.image.standard import STYLES, mix_batch, render_set, standard_accuracy, strokes_of
from churnops.pipeline import ParityError
from churnops.registry import alias_version, register
from churnops.settings import Settings

DATA_SOURCE_SYNTHETIC = "synthetic-sensor"
IMAGE_PACKAGES = ("torch", "rawpy", "tifffile", "onnxruntime", "hyperopt", "mlflow", "numpy")


class SensitivityGateError(RuntimeError):
    """Accuracy under an ISP variation is below the contract's `sensitivity_floor`."""


@dataclass
class ImageData:
    """The loaded data set and its split."""

    root: Path
    files: list[ImageFile]
    X: np.ndarray
    y: np.ndarray
    idx_train: np.ndarray
    idx_val: np.ndarray
    idx_test: np.ndarray
    sha256: str
    synthetic: bool
    uri: str | None = None  # the published version in the feature store (churnops.image.feature_store)
    parent: str | None = None  # the version this one was built from (labelled images appended), if any


@dataclass
class SweepSpace:
    """Bounds of the sweep (tests shrink `epochs`)."""

    lr: tuple[float, float] = (1e-3, 1e-2)
    widths: tuple[int, ...] = (8, 12, 16)
    epochs: tuple[int, int] = (4, 10)
    strength: tuple[float, float] = (0.0, 1.0)

    def hyperopt(self) -> dict:
        from hyperopt import hp
        from hyperopt.pyll import scope

        lo, hi = self.epochs
        return {
            "lr": hp.loguniform("lr", math.log(self.lr[0]), math.log(self.lr[1])),
            "width": hp.choice("width", list(self.widths)),
            "epochs": scope.int(hp.quniform("epochs", lo, hi, 1)) if hi > lo else lo,
            "strength": hp.uniform("strength", *self.strength),
        }


@dataclass
class ImageTrial:
    number: int
    params: dict
    metrics: dict
    fit_seconds: float
    val_proba: np.ndarray = field(repr=False)


def package_versions() -> dict[str, str]:
    """Installed versions of the image track's packages (lineage tags `pkg.*`)."""
    out = {}
    for p in IMAGE_PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "absent"
    return out


def torch_threads(s: Settings) -> int:
    """`train_threads` (0 = all cores, at most 4: more does not help a CNN this small)."""
    return s.train_threads or min(4, os.cpu_count() or 1)


# ---- data ----------------------------------------------------------------------------------------------


def resolve_data(contract: ImageContract, s: Settings, data: str | None, limit: int | None = None) -> tuple[Path, bool]:
    """(folder, synthetic): `data` when given, else the generated raw digits (made once per seed)."""
    if data:
        return Path(data), False
    root = s.state_dir / "images" / (f"{contract.name}-seed{s.seed}" + ("" if limit is None else f"-first{limit}"))
    done = root / ".complete"
    if not done.exists() or json.loads(done.read_text()).get("contract") != contract.fingerprint():
        shutil.rmtree(root, ignore_errors=True)  # made by an older contract (or interrupted): make it anew
        files = generate(root, contract, seed=s.seed, limit=limit)
        done.write_text(json.dumps({"files": len(files), "seed": s.seed, "contract": contract.fingerprint()}))
    return root, True


def prepare(root: Path, contract: ImageContract, s: Settings, synthetic: bool) -> ImageData:
    """List, version, load through the ISP, split (stratified, seeded)."""
    files = list_images(root, contract)
    sha = dataset_sha256(files)
    X, y = load_arrays(files, contract)
    tr, va, te = stratified_split(y, s.test_size, s.val_size, s.seed)
    return ImageData(root, files, X, y, tr, va, te, sha, synthetic)


def training_config(contract: ImageContract, s: Settings, n_trials: int, space: SweepSpace) -> dict:
    """What determines a run's result besides the data: hashed into the `config_hash` tag."""
    return {
        "contract": contract.fingerprint(),
        "n_trials": n_trials,
        "seed": s.seed,
        "test_size": s.test_size,
        "val_size": s.val_size,
        "space": space.__dict__,
        "standard_mix": s.image_standard_mix,
        "quantization": s.image_quantization,
    }


# ---- metrics ---------------------------------------------------------------------------------------------


def classification_metrics(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict:
    from sklearn.metrics import f1_score, log_loss

    pred = proba.argmax(1)
    return {
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, average="macro", labels=list(range(n_classes)), zero_division=0)),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-7, 1), labels=list(range(n_classes)))),
    }


# ---- sweep ------------------------------------------------------------------------------------------------


class TrialLogger:
    """Each finished trial as a nested MLflow run of the sweep (create, batch, terminate)."""

    def __init__(self, mlflow_client, experiment_id: str, parent_run_id: str, timer):
        self.c, self.exp, self.parent, self.timer = mlflow_client, experiment_id, parent_run_id, timer

    def __call__(self, t: ImageTrial) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        with self.timer:
            run = self.c.create_run(
                self.exp,
                run_name=f"trial-{t.number:03d}",
                tags={"mlflow.parentRunId": self.parent, "trial": str(t.number)},
            )
            params = [Param(k, repr(v) if isinstance(v, float) else str(v)) for k, v in t.params.items()]
            metrics = [Metric(f"val_{k}", v, now, 0) for k, v in t.metrics.items()]
            metrics.append(Metric("fit_seconds", t.fit_seconds, now, 0))
            self.c.log_batch(run.info.run_id, metrics=metrics, params=params)
            self.c.set_terminated(run.info.run_id)


def run_sweep(
    data: ImageData, contract: ImageContract, s: Settings, n_trials: int, space: SweepSpace, on_trial=None
) -> list[ImageTrial]:
    """TPE over the space (serial, seeded); loss = 1 - validation accuracy."""
    from hyperopt import STATUS_OK, Trials, fmin, tpe

    from churnops.image.model import fit, predict_proba

    trials: list[ImageTrial] = []
    Xtr, ytr = data.X[data.idx_train], data.y[data.idx_train]
    Xva, yva = data.X[data.idx_val], data.y[data.idx_val]
    threads = torch_threads(s)

    def objective(p: dict) -> dict:
        params = {
            "lr": float(p["lr"]),
            "width": int(p["width"]),
            "epochs": int(p["epochs"]),
            "strength": float(p["strength"]),
            "mix": float(s.image_standard_mix),
        }
        t0 = time.perf_counter()
        net = fit(
            Xtr,
            ytr,
            len(contract.classes),
            params["width"],
            params["lr"],
            params["epochs"],
            params["strength"],
            s.seed,
            threads,
            mix=params["mix"],
        )
        proba = predict_proba(net, Xva)
        trial = ImageTrial(
            len(trials),
            params,
            classification_metrics(yva, proba, len(contract.classes)),
            time.perf_counter() - t0,
            proba,
        )
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
        return {"loss": 1.0 - trial.metrics["accuracy"] + 1e-3 * trial.metrics["log_loss"], "status": STATUS_OK}

    fmin(
        objective,
        space.hyperopt(),
        algo=tpe.suggest,
        max_evals=n_trials,
        trials=Trials(),
        rstate=np.random.default_rng(s.seed),
        show_progressbar=False,
    )
    return trials


def best_trial(trials: list[ImageTrial]) -> ImageTrial:
    """Highest validation accuracy; lower log loss breaks ties, then the earlier trial."""
    return min(trials, key=lambda t: (-t.metrics["accuracy"], t.metrics["log_loss"], t.number))


# ---- refit, evaluate, export ----------------------------------------------------------------------------------


def refit(data: ImageData, best: ImageTrial, contract: ImageContract, s: Settings):
    """The best configuration trained on train + validation (deterministic)."""
    from churnops.image.model import fit

    idx = np.concatenate([data.idx_train, data.idx_val])
    p = best.params
    return fit(
        data.X[idx],
        data.y[idx],
        len(contract.classes),
        p["width"],
        p["lr"],
        p["epochs"],
        p["strength"],
        s.seed,
        torch_threads(s),
        mix=float(p.get("mix", 0.0)),
    )


def evaluate(net, data: ImageData, contract: ImageContract) -> dict:
    """Test metrics, confusion matrix and the test probabilities (for the parity gate)."""
    from sklearn.metrics import confusion_matrix

    from churnops.image.model import predict_proba

    proba = predict_proba(net, data.X[data.idx_test])
    y = data.y[data.idx_test]
    return {
        "metrics": classification_metrics(y, proba, len(contract.classes)),
        "confusion_matrix": confusion_matrix(y, proba.argmax(1), labels=list(range(len(contract.classes)))).tolist(),
        "test_proba": proba,
    }


def standard_images(net, data: ImageData) -> dict[str, float]:
    """{style: accuracy} on PNG/JPEG renders of the test split (churnops.image.standard.STYLES; the
    strokes taken from the test images themselves, so any data set can be measured)."""
    from churnops.image.model import predict_proba

    strokes = strokes_of(data.X[data.idx_test])
    return standard_accuracy(lambda X: predict_proba(net, X), list(strokes), data.y[data.idx_test])


def log_standard_images(table: dict[str, float], run_id: str, tracking_uri: str) -> None:
    """One metric per style (`std_<style>_accuracy`) on the run."""
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(f"std_{k}_accuracy", float(v), now, 0) for k, v in table.items() if v == v]
    mlflow.MlflowClient(tracking_uri).log_batch(run_id, metrics=metrics)


def governance_evidence(data: ImageData, ev: dict, table, s: Settings, standard: dict | None = None) -> dict:
    """What the promotion rules (churnops/rules/image_classification.yaml) judge: test accuracy, the
    ISP sensitivity table, the standard-images accuracies (`standard`, {style: accuracy}) and the
    current champion re-scored on this run's test split (its ONNX model from the registry).
    Computed before registration, so the champion is the one to beat."""
    from churnops.image.model import onnx_proba, onnx_session

    acc = float(ev["metrics"]["accuracy"])
    out: dict = {
        "test_accuracy": acc,
        "sensitivity": {str(r.variation): float(r.accuracy) for r in table.itertuples()},
        "standard": dict(standard or {}),
        "onnx_parity_passed": True,  # registration is reached only through the parity gate
        "contract_passed": True,  # list_images refused any file the contract does not allow
        "comparisons": [],
    }
    champ = alias_version(s.model_name, "champion", s)
    out["champion_version"] = str(champ.version) if champ is not None else None
    if champ is None:
        return out
    X, y = data.X[data.idx_test], data.y[data.idx_test]
    try:
        import mlflow.onnx

        mlflow.set_registry_uri(s.mlflow_tracking_uri)
        proto = mlflow.onnx.load_model(f"models:/{s.model_name}/{champ.version}")
        champion_acc = float((onnx_proba(onnx_session(proto.SerializeToString()), X).argmax(1) == y).mean())
        out["comparisons"].append(
            {"on": "test split", "rows": int(len(y)), "challenger_accuracy": acc, "champion_accuracy": champion_acc}
        )
    except Exception as exc:  # the improvement rule then fails, naming why
        out["champion_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return out


def onnx_gate(net, data: ImageData, ev: dict, contract: ImageContract, tolerance: float) -> tuple[bytes, float]:
    """Export to ONNX; max |p_onnx - p_torch| over the test set must be <= tolerance, else ParityError."""
    from churnops.image.model import export_onnx, onnx_proba, onnx_session

    onnx_bytes = export_onnx(net, contract.image.height, contract.image.width)
    diff = float(np.abs(onnx_proba(onnx_session(onnx_bytes), data.X[data.idx_test]) - ev["test_proba"]).max())
    if not diff <= tolerance:
        raise ParityError(f"ONNX parity {diff:.2e} > tolerance {tolerance:.0e}: model not registered")
    return onnx_bytes, diff


def quantization_sets(
    data: ImageData, contract: ImageContract, s: Settings
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The labelled sets the int8 gate scores: the test split, its raw files under every ISP variation
    (churnops.image.analysis), and its standard-image renders."""
    te = data.idx_test
    sets = {"test": (data.X[te], data.y[te])}
    raw = [i for i in te if data.files[i].path.suffix.lower() in RAW_SUFFIXES]
    frames = [read_raw(data.files[i].path, data.files[i].rel) for i in raw]
    for name, (_, variation) in VARIATIONS.items():
        if frames and name != "baseline":
            sets[f"isp.{name}"] = (develop(frames, contract.isp, variation, s.seed), data.y[raw])
    strokes = list(strokes_of(data.X[te]))
    for name, style in STYLES.items():
        sets[f"standard.{name}"] = (render_set(strokes, style), data.y[te])
    return sets


def calibration_images(data: ImageData, s: Settings, n: int = 256) -> np.ndarray:
    """Training images for static calibration, half of them replaced by standard-image renders."""
    rng = np.random.default_rng([s.seed, 11])
    idx = rng.choice(data.idx_train, size=min(n, len(data.idx_train)), replace=False)
    X = data.X[np.sort(idx)]
    return mix_batch(X, strokes_of(X), 0.5, rng)


def quantize_gate(
    onnx_bytes: bytes, data: ImageData, contract: ImageContract, s: Settings
) -> tuple[bytes | None, dict]:
    """(int8 ONNX bytes or None, the gate's report): `IMAGE_QUANTIZATION` static | dynamic | off. A model
    that fails the gate is left out (the float model is registered anyway); the report says why."""
    method = s.image_quantization
    if method == "off":
        return None, {"method": "off", "passed": False, "failure": "IMAGE_QUANTIZATION=off"}
    calibration = calibration_images(data, s) if method == "static" else None
    t0 = time.perf_counter()
    int8 = quantize(onnx_bytes, method, calibration)
    seconds = time.perf_counter() - t0
    try:
        report = gate(
            onnx_bytes,
            int8,
            quantization_sets(data, contract, s),
            s.image_int8_max_accuracy_drop,
            s.image_int8_min_agreement,
        )
    except QuantizationGateError as exc:
        return None, exc.report | {"method": method, "quantize_seconds": seconds}
    return int8, report | {"method": method, "quantize_seconds": seconds}


def check_sensitivity_floors(table, contract: ImageContract) -> None:
    """Raise SensitivityGateError naming every variation whose accuracy is under its floor."""
    acc = dict(zip(table["variation"], table["accuracy"]))
    unknown = sorted(set(contract.sensitivity_floor) - set(acc))
    if unknown:
        raise SensitivityGateError(f"sensitivity_floor names unknown variations {unknown}; known: {sorted(acc)}")
    low = {k: (acc[k], v) for k, v in contract.sensitivity_floor.items() if not acc[k] >= v}
    if low:
        raise SensitivityGateError(
            "accuracy under ISP variations below the contract's floor: "
            + ", ".join(f"{k} {a:.4f} < {f}" for k, (a, f) in sorted(low.items()))
            + "; model not registered"
        )


def _confusion_png(cm: list, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(np.array(cm), cmap="Blues")
    for (i, j), v in np.ndenumerate(np.array(cm)):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(classes)), classes), ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted"), ax.set_ylabel("actual"), ax.set_title("test confusion matrix")
    fig.tight_layout(), fig.savefig(path, dpi=90), plt.close(fig)


def write_quantization(art: Path, int8: bytes | None, quantization: dict | None) -> dict:
    """Write the int8 model and the gate's report into the artifact folder; the run's int8 metrics."""
    if quantization is not None:
        (art / REPORT_ARTIFACT).write_text(json.dumps(quantization, indent=1))
    if int8 is not None:
        (art / INT8_ARTIFACT).write_bytes(int8)
    q = quantization or {}
    names = {
        "accuracy_drop": "int8_accuracy_drop",
        "argmax_agreement": "int8_argmax_agreement",
        "accuracy_int8": "int8_pooled_accuracy",
        "bytes_int8": "int8_bytes",
    }
    return {m: float(q[k]) for k, m in names.items() if isinstance(q.get(k), (int, float))}


def log_and_register(
    net,
    onnx_bytes: bytes,
    diff: float,
    data: ImageData,
    ev: dict,
    best: ImageTrial,
    trials: list[ImageTrial],
    contract: ImageContract,
    s: Settings,
    parent_run_id: str,
    timer,
    int8: bytes | None = None,
    quantization: dict | None = None,
) -> dict:
    """Log metrics, artifacts and the ONNX model to the parent run, then register it (tags: data source, SHA-256).
    `int8` (the quantized model that passed its gate) goes beside it as `model_int8.onnx` in the same
    run, `quantization` (the gate's report) as `quantization.json`; the version is tagged `int8_artifact`."""
    import mlflow
    import onnx
    import torch

    source = DATA_SOURCE_SYNTHETIC if data.synthetic else "real"
    meta = {
        "task": contract.task,
        "dataset": contract.name,
        "model_name": s.model_name,
        "classes": contract.classes,
        "input": {
            "name": "image",
            "shape": [None, 3, contract.image.height, contract.image.width],
            "range": [0.0, 1.0],
            "layout": "NCHW RGB, ISP output for raw files",
        },
        "outputs": ["probabilities", "embedding"],
        "isp": contract.isp.model_dump(mode="json"),
        "contract_sha256": contract.fingerprint(),
        "dataset_sha256": data.sha256,
        "data_source": source,
        "best_params": best.params,
        "test_metrics": ev["metrics"],
        "onnx_max_abs_diff": diff,
        "run_id": parent_run_id,
    }
    with tempfile.TemporaryDirectory() as tmp:
        art = Path(tmp)
        (art / "image_meta.json").write_text(json.dumps(meta, indent=1))
        (art / "evaluation.json").write_text(
            json.dumps({k: v for k, v in ev.items() if k != "test_proba"} | {"onnx_max_abs_diff": diff}, indent=1)
        )
        pd.DataFrame(
            [
                {
                    "trial": t.number,
                    **t.params,
                    **{f"val_{k}": v for k, v in t.metrics.items()},
                    "fit_seconds": t.fit_seconds,
                }
                for t in trials
            ]
        ).to_csv(art / "trials.csv", index=False)
        torch.save(net.state_dict(), art / "cnn_state_dict.pt")
        _confusion_png(ev["confusion_matrix"], contract.classes, art / "confusion_matrix.png")
        # the image drift reference: summaries of a sample of the images, as serving logs them
        from churnops.image.monitor import REFERENCE_FILE, reference_payload

        ref = reference_payload(data.files, data.X, onnx_bytes, contract.classes, seed=s.seed)
        (art / REFERENCE_FILE).write_text(json.dumps(ref))
        quant_metrics = write_quantization(art, int8, quantization)
        with timer, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            mlflow.set_tracking_uri(s.mlflow_tracking_uri)
            # the run's own experiment active (start_run refuses a run of another active experiment)
            mlflow.set_experiment(experiment_id=mlflow.get_run(parent_run_id).info.experiment_id)
            with mlflow.start_run(run_id=parent_run_id):
                mlflow.log_params({k: (repr(v) if isinstance(v, float) else v) for k, v in best.params.items()})
                mlflow.log_metrics(
                    {f"test_{k}": v for k, v in ev["metrics"].items()}
                    | {
                        "onnx_max_abs_diff": diff,
                        "best_val_accuracy": best.metrics["accuracy"],
                        "n_trials": len(trials),
                    }
                    | quant_metrics
                )
                mlflow.log_artifacts(str(art))
                info = mlflow.onnx.log_model(
                    onnx.load_from_string(onnx_bytes), name="model", pip_requirements=["onnxruntime", "numpy", "mlflow"]
                )
        with timer:
            tags = {
                "run_id": parent_run_id,
                "data_source": source,
                "dataset_sha256": data.sha256,
                "task": contract.task,
                "contract_fingerprint": contract.fingerprint(),  # one contract per model name (registry.register)
            }
            if int8 is not None:
                tags["int8_artifact"] = INT8_ARTIFACT  # in this run: IMAGE_MODEL_PRECISION=int8 serves it
            version, aliases = register(parent_run_id, info.model_uri, s, tags=tags)
            mlflow.MlflowClient(s.mlflow_tracking_uri).set_tag(parent_run_id, "registered_version", str(version))
    return {"model_uri": info.model_uri, "version": str(version), "aliases": aliases}
