"""The training pipeline's steps as plain functions; `flows/train_flow.py` runs them as Prefect tasks.

load snapshot -> validate -> split -> sweep (each trial a nested MLflow run) -> refit best ->
test metrics, threshold, plots -> bundle + ONNX parity gate -> log ONE model -> register.
Nothing is registered and no alias moves unless every step before registration succeeded.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from churnops.cleaning import check_clean_frame
from churnops.contract import ContractViolation, DatasetContract
from churnops.features import FeatureEncoder
from churnops.model_line import resolved
from churnops.registry import alias_version, client, register
from churnops.settings import Settings
from churnops.tasks import Task, task_for
from churnops.training import Split
from churnops.tuning import SweepConfig, TrialResult, run_sweep

log = logging.getLogger(__name__)


class ParityError(RuntimeError):
    """ONNX export disagrees with the native model beyond the tolerance."""


@dataclass
class Prepared:
    """The clean frame and its encoded split."""

    clean: pd.DataFrame
    split: Split
    idx_train: np.ndarray
    idx_val: np.ndarray
    idx_test: np.ndarray
    encoder: FeatureEncoder
    task: Task = field(default_factory=task_for)  # what differs per task (churnops.tasks)


@dataclass
class Timer:
    """Accumulates seconds spent in MLflow calls, to report logging overhead."""

    seconds: float = 0.0
    calls: int = 0

    def __enter__(self):
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._t
        self.calls += 1


@dataclass
class TrainOutcome:
    run_id: str
    model_uri: str
    version: str | None
    aliases: list[str]
    best_params: dict
    test_metrics: dict
    threshold: float | None  # None: the task has no decision threshold (regression)
    onnx_max_abs_diff: float
    n_trials: int
    sweep_seconds: float
    logging_seconds: float


# ---- data -----------------------------------------------------------------------------------------


def validate_clean(clean: pd.DataFrame, contract: DatasetContract, subject: str) -> None:
    """Raise ContractViolation with the full report when the frame breaks the contract."""
    report = check_clean_frame(clean, contract, subject=subject)
    if not report.ok:
        raise ContractViolation(report)


def prepare(clean: pd.DataFrame, contract: DatasetContract, s: Settings) -> Prepared:
    """Encode features (contract columns only: ids and leakage never reach the model) and split."""
    task = task_for(contract)
    enc = FeatureEncoder.from_contract(contract)
    X = enc.transform_frame(clean)
    y = task.target_array(clean[contract.target.name])
    tr, va, te = task.split(y, s.test_size, s.val_size, s.seed)
    split = Split(X[tr], y[tr], X[va], y[va], X[te], y[te])
    return Prepared(clean, split, tr, va, te, enc, task)


def sweep_config(s: Settings, n_trials: int | None = None, task: Task | None = None) -> SweepConfig:
    return SweepConfig(
        task=task,
        n_trials=n_trials or s.n_trials,
        seed=s.seed,
        max_trees=s.max_trees,
        early_stopping=s.early_stopping_rounds,
        threads=s.train_threads,
        executor=s.sweep_executor,
        dask_address=s.dask_address,
        dask_workers=s.dask_workers,
    )


def training_config(s: Settings, contract: DatasetContract) -> dict:
    """What determines a run's result besides the data: hashed into the `config_hash` tag."""
    return {
        "contract": contract.fingerprint(),
        "n_trials": s.n_trials,
        "seed": s.seed,
        "test_size": s.test_size,
        "val_size": s.val_size,
        "max_trees": s.max_trees,
        "early_stopping_rounds": s.early_stopping_rounds,
        "threshold_strategy": s.threshold_strategy,
        "target_precision": s.target_precision,
        "sweep_executor": s.sweep_executor,
    }


# ---- tracking -----------------------------------------------------------------------------------------


class TrialLogger:
    """Logs each finished trial as a nested MLflow run (3 calls: create, batch, terminate)."""

    def __init__(
        self,
        mlflow_client,
        experiment_id: str,
        parent_run_id: str,
        timer: Timer,
        progress=None,
        task: Task | None = None,
    ):
        self.c, self.exp, self.parent, self.timer, self.progress = (
            mlflow_client,
            experiment_id,
            parent_run_id,
            timer,
            progress,
        )
        self.headline = (task or task_for()).headline  # the validation metric shown per trial
        self.best_loss = float("inf")
        self.best = float("nan")

    def __call__(self, tr: TrialResult) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        with self.timer:
            run = self.c.create_run(
                self.exp,
                run_name=f"trial-{tr.number:03d}",
                tags={"mlflow.parentRunId": self.parent, "trial": str(tr.number)},
            )
            params = [Param(k, repr(v) if isinstance(v, float) else str(v)) for k, v in tr.params.items()]
            params.append(Param("n_trees", str(tr.n_trees)))
            metrics = [Metric(f"val_{k}", v, now, 0) for k, v in tr.metrics.items()]
            metrics.append(Metric("fit_seconds", tr.fit_seconds, now, 0))
            self.c.log_batch(run.info.run_id, metrics=metrics, params=params)
            self.c.set_terminated(run.info.run_id)
        if tr.loss < self.best_loss:
            self.best_loss, self.best = tr.loss, tr.metrics[self.headline]
        if self.progress is not None:
            self.progress.set_postfix({self.headline: f"{tr.metrics[self.headline]:.4f}", "best": f"{self.best:.4f}"})
            self.progress.update(1)


def start_parent_run(s: Settings, tags: dict) -> tuple[str, str]:
    """Create the sweep's parent run; returns (experiment_id, run_id)."""
    import mlflow

    s = resolved(s)
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    c = client(s)
    exp = c.get_experiment_by_name(s.experiment_name)
    exp_id = exp.experiment_id if exp else c.create_experiment(s.experiment_name)
    run = c.create_run(exp_id, run_name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags)
    return exp_id, run.info.run_id


# ---- sweep and refit ----------------------------------------------------------------------------------


def sweep(
    prep: Prepared,
    s: Settings,
    exp_id: str,
    parent_run_id: str,
    timer: Timer,
    n_trials: int | None = None,
    show_progress: bool = True,
) -> list[TrialResult]:
    """Run the TPE sweep; every trial becomes a nested run of `parent_run_id`."""
    cfg = sweep_config(s, n_trials, prep.task)
    bar = tqdm(total=cfg.n_trials, desc="sweep trials", unit="trial", disable=not show_progress, mininterval=0.5)
    try:
        return run_sweep(prep.split, cfg, TrialLogger(client(s), exp_id, parent_run_id, timer, bar, prep.task))
    finally:
        bar.close()


def refit(prep: Prepared, best: TrialResult, s: Settings):
    """Refit the best configuration on train with its early-stopped tree count (deterministic)."""
    model = prep.task.make_estimator(best.params, s.seed, best.n_trees, s.train_threads, None)
    model.fit(prep.split.X_train, prep.split.y_train, verbose=False)
    return model


def evaluate(model, prep: Prepared, best: TrialResult, s: Settings) -> dict:
    """The task's test evaluation (`ev`): `metrics`, `threshold` (None without one), `test_proba`
    (the model's test output: probabilities, or values for a regression), `feature_importance`."""
    return prep.task.evaluate(model, prep, s)


# ---- governance evidence ------------------------------------------------------------------------------


def contract_yaml(contract: DatasetContract) -> str:
    """The contract as YAML (the model carries it as artifact `contract.yaml`)."""
    return yaml.safe_dump(contract.model_dump(mode="json", exclude_none=False), sort_keys=False)


def load_alias_bundle(s: Settings, alias: str = "champion"):
    """The Bundle of `<model>@alias` (None when the alias is not set)."""
    import mlflow

    from churnops.bundle import Bundle

    s = resolved(s)
    mv = alias_version(s.model_name, alias, s)
    if mv is None:
        return None, None
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{s.model_name}/{mv.version}", dst_path=tmp)
        )
        metas = sorted(root.rglob("meta.json"))
        if not metas:
            raise FileNotFoundError(f"no model bundle in {s.model_name} v{mv.version}")
        return mv, Bundle.load(metas[0].parent, prefer_onnx=False)


def governance_evidence(
    model,
    prep: Prepared,
    ev: dict,
    contract: DatasetContract,
    s: Settings,
    onnx_diff: float,
    fresh: pd.DataFrame | None = None,
    measure_latency: bool = False,
) -> dict:
    """What the promotion rules judge: the challenger's test metrics and calibration, and the
    champion re-scored on the same evaluation data (the challenger's test split, and `fresh`, the
    held-out slice of the newest labelled rows, when given)."""
    task = prep.task
    target = contract.target.name
    y_test = prep.split.y_test
    evidence: dict = task.evidence(y_test, ev) | {
        "onnx_parity_passed": bool(onnx_diff <= s.onnx_tolerance),
        "onnx_max_abs_diff": float(onnx_diff),
        "contract_passed": True,
        "contract_fingerprint": contract.fingerprint(),
        "comparisons": [],
    }
    frames = [("test split", prep.clean.iloc[prep.idx_test], ev["test_proba"])]
    if fresh is not None and len(fresh):
        frames.append(("fresh slice", fresh, task.predict(model, prep.encoder.transform_frame(fresh))))
        evidence["fresh_rows"] = int(len(fresh))
    try:
        mv, champ = load_alias_bundle(s, "champion")
    except Exception as exc:
        mv, champ = None, None
        evidence["champion_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    if mv is not None and champ is not None:
        evidence["champion_version"] = str(mv.version)
        fp = champ.meta.get("contract_fingerprint")
        if fp and fp != contract.fingerprint():
            evidence["contract_passed"] = False
            evidence["contract_passed_detail"] = (
                f"champion v{mv.version} was trained with contract {fp[:12]}, "
                f"this model with {contract.fingerprint()[:12]}"
            )
        try:
            for name, frame, proba in frames:
                y = frame[target].to_numpy()
                champ_p = champ.predict_matrix(champ.encoder.transform_frame(frame))
                evidence["comparisons"].append({"on": name, "rows": int(len(frame))} | task.compare(y, proba, champ_p))
        except Exception as exc:
            evidence["champion_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    if measure_latency:
        X = prep.split.X_test[:200]
        times = []
        for i in range(len(X)):
            t0 = time.perf_counter()
            task.predict(model, X[i : i + 1])
            times.append((time.perf_counter() - t0) * 1000)
        evidence["latency_ms_p95"] = float(np.percentile(times, 95)) if times else None
    return evidence


# ---- artifacts --------------------------------------------------------------------------------------------


def data_profile_html(clean: pd.DataFrame, contract: DatasetContract, path: Path) -> None:
    """Evidently data summary of the training snapshot (the automated exploratory analysis)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataSummaryPreset

    dd = DataDefinition(
        numerical_columns=contract.numeric_features + [contract.target.name],
        categorical_columns=contract.categorical_features + contract.ordinal_features,
    )
    snap = Report([DataSummaryPreset()]).run(current_data=Dataset.from_pandas(clean, data_definition=dd))
    snap.save_html(str(path))


def log_and_register(
    model,
    prep: Prepared,
    ev: dict,
    best: TrialResult,
    trials: list[TrialResult],
    contract: DatasetContract,
    s: Settings,
    parent_run_id: str,
    timer: Timer,
    lineage: dict,
    data_profile: bool = True,
) -> TrainOutcome:
    """Bundle + ONNX parity gate, log everything to the parent run, then register."""
    import mlflow

    from churnops.bundle import export_onnx, onnx_parity, write_bundle

    task = prep.task
    onnx_bytes = export_onnx(model, prep.encoder.width)
    diff = onnx_parity(onnx_bytes, prep.split.X_test, ev["test_proba"], task)
    if not diff <= s.onnx_tolerance:
        with timer:
            mlflow.MlflowClient(s.mlflow_tracking_uri).log_metric(parent_run_id, "onnx_max_abs_diff", diff)
        raise ParityError(f"ONNX parity {diff:.2e} > tolerance {s.onnx_tolerance:.0e}: model not registered")

    meta = {
        "model_name": s.model_name,
        "task": task.name,
        "dataset": contract.name,
        "target": contract.target.name,
        "contract_fingerprint": contract.fingerprint(),
        "features": contract.feature_names,
        "test_metrics": ev["metrics"],
        "best_params": best.params,
        "n_trees": best.n_trees,
        "onnx_max_abs_diff": diff,
        "run_id": parent_run_id,
        "threshold_strategy": s.threshold_strategy if ev["threshold"] is not None else None,
        **{k: v for k, v in lineage.items() if not k.startswith("pkg.")},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle_dir = write_bundle(tmp / "bundle", prep.encoder, model, ev["threshold"], meta, onnx_bytes)
        art = tmp / "artifacts"
        art.mkdir()
        (art / "contract.yaml").write_text(contract_yaml(contract))
        (art / "evaluation.json").write_text(
            json.dumps({k: v for k, v in ev.items() if k != "test_proba"} | {"onnx_max_abs_diff": diff}, indent=1)
        )
        if ev["threshold"] is not None:
            (art / "threshold.json").write_text(
                json.dumps(
                    {
                        "threshold": ev["threshold"],
                        "strategy": s.threshold_strategy,
                        "target_precision": s.target_precision,
                    }
                )
            )
        if ev.get("test_proba") is not None and task.name == "binary_classification":
            # held-out probabilities vs labels: the calibration of the estimated performance (CBPE)
            pd.DataFrame({"probability": ev["test_proba"], "label": prep.split.y_test}).to_csv(
                art / "calibration_reference.csv", index=False
            )
        ref = prep.clean.iloc[prep.idx_train]
        if len(ref) > s.reference_sample_rows:
            ref = ref.sample(s.reference_sample_rows, random_state=s.seed)
        ref = ref.copy()
        ref["prediction"] = task.predict(model, prep.encoder.transform_frame(ref))
        ref.to_csv(art / "reference_sample.csv", index=False)
        pd.DataFrame(
            [
                {"trial": t.number, **t.params, "n_trees": t.n_trees, **{f"val_{k}": v for k, v in t.metrics.items()}}
                for t in trials
            ]
        ).to_csv(art / "trials.csv", index=False)
        task.plots(ev, art)
        if data_profile:
            data_profile_html(prep.clean, contract, art / "data_profile.html")

        from mlflow.models import infer_signature

        example = prep.clean[contract.feature_names].head(5)
        with warnings.catch_warnings():
            # integer columns (the contract's counts, the 0/1 decision) are deliberate: never missing
            warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer column", UserWarning)
            signature = infer_signature(example, task.signature_output())
        with timer:
            mlflow.set_tracking_uri(s.mlflow_tracking_uri)
            # the run's own experiment active (start_run refuses a run of another active experiment)
            mlflow.set_experiment(experiment_id=mlflow.get_run(parent_run_id).info.experiment_id)
            with mlflow.start_run(run_id=parent_run_id):
                mlflow.log_params(
                    {k: (repr(v) if isinstance(v, float) else v) for k, v in best.params.items()}
                    | {"n_trees": best.n_trees}
                )
                mlflow.log_metrics(
                    {f"test_{k}": v for k, v in ev["metrics"].items()}
                    | {
                        "onnx_max_abs_diff": diff,
                        f"best_val_{task.headline}": best.metrics[task.headline],
                        "n_trials": len(trials),
                    }
                    | ({"threshold": ev["threshold"]} if ev["threshold"] is not None else {})
                )
                mlflow.log_artifacts(str(art))
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(Path(__file__).resolve().parent / "pyfunc_model.py"),
                    artifacts={"bundle": str(bundle_dir)},
                    signature=signature,
                    input_example=example,  # MLflow loads the model and scores it (a check of the logged model)
                    pip_requirements=["xgboost", "onnxruntime", "pandas", "numpy", "mlflow"],
                    code_paths=[str(Path(__file__).resolve().parent)],
                )
        with timer:
            version, aliases = register(
                parent_run_id,
                info.model_uri,
                s,
                tags={
                    "run_id": parent_run_id,
                    "dataset": contract.name,
                    "contract_fingerprint": contract.fingerprint(),
                },
            )
            mlflow.MlflowClient(s.mlflow_tracking_uri).set_tag(parent_run_id, "registered_version", str(version))
    return TrainOutcome(
        run_id=parent_run_id,
        model_uri=info.model_uri,
        version=str(version),
        aliases=aliases,
        best_params=best.params,
        test_metrics=ev["metrics"],
        threshold=ev["threshold"],
        onnx_max_abs_diff=diff,
        n_trials=len(trials),
        sweep_seconds=0.0,
        logging_seconds=timer.seconds,
    )
