"""What differs per tabular task in the core: the contract's `task` picks one of these objects.

Per task: how the target is cleaned and checked, the split, the XGBoost estimator and its search
space, the validation metrics and the loss the sweep minimises, the decision-threshold step (or
none), the test evaluation, the governance evidence and the champion comparison, the ONNX output
to read. The pipeline, the bundle and governance call `task_for(...)` and never test the task
themselves; the layers above hold the rest of a task: its realized performance in
`churnops.monitoring.performance.outcomes_for`, its answers in `serving.answers.answers_for`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churnops.evaluation import auc, classifier_plots, evaluate_classifier
from churnops.metrics import expected_calibration_error
from churnops.training import classification_metrics, make_classifier, stratified_split
from churnops.tuning import search_space


@dataclass(frozen=True)
class BinaryClassification:
    """XGBoost `binary:logistic`; the sweep minimises 1 - validation AUC-ROC; threshold from validation."""

    name: str = "binary_classification"
    headline: str = "auc_roc"  # the validation metric reported per trial
    output_field: str = "probability"  # what a prediction answers (and the log keeps)

    # ---- data ----------------------------------------------------------------------------------
    def clean_target(self, labels, contract) -> np.ndarray:
        """Label column -> 1.0 (positive) / 0.0, NaN for a label outside the contract."""
        s = labels.astype(str).str.strip()
        out = np.where(s == contract.target.positive, 1.0, 0.0)
        out[~s.isin(contract.target.labels).to_numpy()] = np.nan
        return out

    def check_target(self, col, contract) -> list[str]:
        """Failures of the clean target column (empty: fine)."""
        name = contract.target.name
        bad = int(col.isna().sum())
        if bad:
            return [f"{name}: {bad} row(s) with a label outside {contract.target.labels}"]
        if len(col) and col.nunique() < 2:
            return [f"{name}: only one class present; need both labels"]
        return []

    def target_array(self, col) -> np.ndarray:
        return col.to_numpy().astype(np.int32)

    def split(self, y: np.ndarray, test_size: float, val_size: float, seed: int):
        return stratified_split(y, test_size, val_size, seed)

    # ---- model ---------------------------------------------------------------------------------
    def search_space(self) -> dict:
        return search_space()

    def make_estimator(self, params: dict, seed: int, n_estimators: int, threads: int, early_stopping: int | None):
        return make_classifier(params, seed, n_estimators, threads, early_stopping)

    def predict(self, model, X: np.ndarray, iteration_range: tuple[int, int] | None = None) -> np.ndarray:
        """Positive-class probabilities of a fitted XGBClassifier."""
        kw = {"iteration_range": iteration_range} if iteration_range else {}
        return model.predict_proba(X, **kw)[:, 1]

    def metrics(self, y: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
        return classification_metrics(y, pred, threshold)

    def loss(self, metrics: dict) -> float:
        return 1.0 - metrics["auc_roc"]

    def parity(self, onnx: np.ndarray, native: np.ndarray) -> float:
        """Max absolute probability difference (the gate's tolerance applies to it)."""
        return float(np.max(np.abs(onnx - native)))

    def onnx_output(self, outs: list) -> np.ndarray:
        """Positive-class probabilities from an ONNX classifier's outputs (dict or tensor)."""
        probs = outs[1]
        if isinstance(probs, list):  # ZipMap output: list of {label: p}
            return np.array([p[1] for p in probs], dtype=np.float64)
        return np.ascontiguousarray(np.asarray(probs, dtype=np.float64)[:, 1])

    # ---- evaluation and governance ---------------------------------------------------------------
    def evaluate(self, model, prep, s) -> dict:
        return evaluate_classifier(model, prep, s)

    def evidence(self, y_test: np.ndarray, ev: dict) -> dict:
        """What the rules judge about the challenger alone."""
        return {
            "test_auc_roc": float(ev["metrics"]["auc_roc"]),
            "calibration_error": expected_calibration_error(y_test, ev["test_proba"]),
        }

    def compare(self, y: np.ndarray, challenger: np.ndarray, champion: np.ndarray) -> dict:
        y = np.asarray(y).astype(int)
        return {"challenger_auc_roc": auc(y, challenger), "champion_auc_roc": auc(y, champion)}

    def signature_output(self):
        return pd.DataFrame({"probability": [0.5], "churn": [1]})

    def pyfunc_output(self, pred: np.ndarray, threshold: float | None):
        return pd.DataFrame({"probability": pred, "churn": (pred >= threshold).astype(int)})

    def plots(self, ev: dict, folder) -> None:
        classifier_plots(ev, folder)


@dataclass(frozen=True)
class Regression:
    """XGBoost `reg:squarederror`; the sweep minimises validation RMSE; no threshold.

    Metrics: MAE, RMSE, R² and `share_off`, the share of predictions off by more than the
    contract's `tolerance` (absent when the contract states none).
    """

    tolerance: float | None = None
    name: str = "regression"
    headline: str = "rmse"
    output_field: str = "prediction"

    # ---- data ----------------------------------------------------------------------------------
    def clean_target(self, values, contract) -> np.ndarray:
        """Numeric target; anything not a finite number becomes NaN (and is reported)."""
        v = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
        v[~np.isfinite(v)] = np.nan
        return v

    def check_target(self, col, contract) -> list[str]:
        t = contract.target
        out = []
        bad = int(col.isna().sum())
        if bad:
            out.append(f"{t.name}: {bad} row(s) without a finite numeric target")
        v = col.dropna()
        if t.min is not None and (v < t.min).any():
            out.append(f"{t.name}: {int((v < t.min).sum())} value(s) below min {t.min:g} (min seen {v.min():g})")
        if t.max is not None and (v > t.max).any():
            out.append(f"{t.name}: {int((v > t.max).sum())} value(s) above max {t.max:g} (max seen {v.max():g})")
        if len(v) and v.nunique() < 2:
            out.append(f"{t.name}: constant target; nothing to learn")
        return out

    def target_array(self, col) -> np.ndarray:
        return col.to_numpy().astype(np.float64)

    def split(self, y: np.ndarray, test_size: float, val_size: float, seed: int):
        """Index arrays (train, val, test): random, not stratified, reproducible for a seed."""
        idx = np.arange(len(y))
        from sklearn.model_selection import train_test_split  # training only (lazy-imports)

        rest, test = train_test_split(idx, test_size=test_size, random_state=seed)
        train, val = train_test_split(rest, test_size=val_size / (1.0 - test_size), random_state=seed)
        return np.sort(train), np.sort(val), np.sort(test)

    # ---- model ---------------------------------------------------------------------------------
    def search_space(self) -> dict:
        space = search_space()
        space.pop("scale_pos_weight")  # a class weight: meaningless for a regression
        return space

    def make_estimator(self, params: dict, seed: int, n_estimators: int, threads: int, early_stopping: int | None):
        import xgboost as xgb  # training only (lazy-imports)

        return xgb.XGBRegressor(
            n_estimators=n_estimators,
            tree_method="hist",
            objective="reg:squarederror",
            eval_metric="rmse",
            early_stopping_rounds=early_stopping,
            random_state=seed,
            n_jobs=threads or None,
            max_bin=256,
            **{k: v for k, v in params.items() if k != "scale_pos_weight"},
        )

    def predict(self, model, X: np.ndarray, iteration_range: tuple[int, int] | None = None) -> np.ndarray:
        kw = {"iteration_range": iteration_range} if iteration_range else {}
        return np.asarray(model.predict(X, **kw), dtype=np.float64)

    def metrics(self, y: np.ndarray, pred: np.ndarray, threshold: float | None = None) -> dict[str, float]:
        return regression_metrics(y, pred, self.tolerance)

    def loss(self, metrics: dict) -> float:
        return metrics["rmse"]

    def parity(self, onnx: np.ndarray, native: np.ndarray) -> float:
        """Max difference relative to the value's size (at least 1): both runtimes sum the trees in
        float32, so on values in the hundreds their absolute difference is ~1e-4 by rounding alone."""
        native = np.asarray(native, dtype=np.float64)
        return float(np.max(np.abs(onnx - native) / np.maximum(1.0, np.abs(native))))

    def onnx_output(self, outs: list) -> np.ndarray:
        """Predicted values from an ONNX regressor's one output ([N, 1] or [N])."""
        return np.ascontiguousarray(np.asarray(outs[0], dtype=np.float64).reshape(-1))

    # ---- evaluation and governance ---------------------------------------------------------------
    def evaluate(self, model, prep, s) -> dict:
        """Test metrics, residual summary and feature importance; no threshold."""
        pred = self.predict(model, prep.split.X_test)
        resid = pred - prep.split.y_test
        importance = dict(zip(prep.encoder.output_names, model.feature_importances_.astype(float).tolist()))
        return {
            "threshold": None,
            "metrics": self.metrics(prep.split.y_test, pred),
            "test_proba": pred,  # the model's test output (here: predicted values)
            "residuals": {
                "mean": float(resid.mean()),
                "quantiles": dict(zip(("p05", "p50", "p95"), np.quantile(resid, [0.05, 0.5, 0.95]).tolist())),
            },
            "feature_importance": dict(sorted(importance.items(), key=lambda kv: -kv[1])),
        }

    def evidence(self, y_test: np.ndarray, ev: dict) -> dict:
        m = ev["metrics"]
        out = {"test_rmse": float(m["rmse"]), "test_r2": float(m["r2"])}
        if "share_off" in m:
            out["share_off"] = float(m["share_off"])
        return out

    def compare(self, y: np.ndarray, challenger: np.ndarray, champion: np.ndarray) -> dict:
        y = np.asarray(y, dtype=np.float64)
        return {"challenger_rmse": rmse(y, challenger), "champion_rmse": rmse(y, champion)}

    def signature_output(self):
        return pd.DataFrame({"prediction": [0.5]})

    def pyfunc_output(self, pred: np.ndarray, threshold: float | None):
        return pd.DataFrame({"prediction": pred})

    def plots(self, ev: dict, folder) -> None:
        import matplotlib  # training only (lazy-imports)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # after choosing the Agg backend

        top = list(ev["feature_importance"].items())[:20][::-1]
        fig, ax = plt.subplots(figsize=(6, 5))
        ax.barh([k for k, _ in top], [v for _, v in top])
        ax.set_title("feature importance (gain share)")
        fig.tight_layout(), fig.savefig(folder / "feature_importance.png", dpi=90), plt.close(fig)


Task = BinaryClassification | Regression


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    return float(np.sqrt(np.mean((pred - y) ** 2))) if len(y) else float("nan")


def regression_metrics(y: np.ndarray, pred: np.ndarray, tolerance: float | None = None) -> dict[str, float]:
    """MAE, RMSE, R² and (with a tolerance) the share of |prediction - y| > tolerance."""
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    from sklearn.metrics import mean_absolute_error, r2_score  # training and monitoring only (lazy-imports)

    out = {"mae": float(mean_absolute_error(y, pred)), "rmse": rmse(y, pred), "r2": float(r2_score(y, pred))}
    if tolerance is not None:
        out["share_off"] = float(np.mean(np.abs(pred - y) > tolerance))
    return out


def task_for(contract_or_name: Any = None, tolerance: float | None = None) -> Task:
    """THE dispatch on a tabular task: from a contract, or from a task name (a bundle's meta)."""
    if contract_or_name is None:
        return BinaryClassification()
    if isinstance(contract_or_name, str):
        name = contract_or_name
    else:
        name, tolerance = contract_or_name.task, getattr(contract_or_name, "tolerance", None)
    if name == "binary_classification":
        return BinaryClassification()
    if name == "regression":
        return Regression(tolerance=tolerance)
    raise ValueError(f"task {name!r} is not a tabular task (binary_classification, regression)")
