"""What differs per tabular task, in ONE place: the contract's `task` picks one of these objects.

Per task: how the target is cleaned and checked, the split, the XGBoost estimator and its search
space, the validation metrics and the loss the sweep minimises, the decision-threshold step (or
none), the test evaluation, the governance evidence and the champion comparison, the ONNX output
to read, and the fields a prediction answers with. The pipeline, the bundle, governance and the
servers call `task_for(...)` and never test the task themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


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
        from churnops.training import stratified_split

        return stratified_split(y, test_size, val_size, seed)

    # ---- model ---------------------------------------------------------------------------------
    def search_space(self) -> dict:
        from churnops.tuning import search_space

        return search_space()

    def make_estimator(self, params: dict, seed: int, n_estimators: int, threads: int, early_stopping: int | None):
        from churnops.training import make_classifier

        return make_classifier(params, seed, n_estimators, threads, early_stopping)

    def predict(self, model, X: np.ndarray, iteration_range: tuple[int, int] | None = None) -> np.ndarray:
        """Positive-class probabilities of a fitted XGBClassifier."""
        kw = {"iteration_range": iteration_range} if iteration_range else {}
        return model.predict_proba(X, **kw)[:, 1]

    def metrics(self, y: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
        from churnops.training import classification_metrics

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
        from churnops.pipeline import evaluate_classifier

        return evaluate_classifier(model, prep, s)

    def evidence(self, y_test: np.ndarray, ev: dict) -> dict:
        """What the rules judge about the challenger alone."""
        from churnops.metrics import expected_calibration_error

        return {
            "test_auc_roc": float(ev["metrics"]["auc_roc"]),
            "calibration_error": expected_calibration_error(y_test, ev["test_proba"]),
        }

    def compare(self, y: np.ndarray, challenger: np.ndarray, champion: np.ndarray) -> dict:
        from churnops.pipeline import auc

        y = np.asarray(y).astype(int)
        return {"challenger_auc_roc": auc(y, challenger), "champion_auc_roc": auc(y, champion)}

    def signature_output(self):
        import pandas as pd

        return pd.DataFrame({"probability": [0.5], "churn": [1]})

    def pyfunc_output(self, pred: np.ndarray, threshold: float | None):
        import pandas as pd

        return pd.DataFrame({"probability": pred, "churn": (pred >= threshold).astype(int)})

    def plots(self, ev: dict, folder) -> None:
        from churnops.pipeline import _plots

        _plots(ev, folder)

    # ---- labels and monitoring -----------------------------------------------------------------
    def observed(self, v, contract) -> tuple[Any, str | None]:
        """(0/1, None) for a logged feedback outcome, or (None, what is wrong with it)."""
        if isinstance(v, bool):
            return int(v), None
        if isinstance(v, (int, np.integer)) and int(v) in (0, 1):
            return int(v), None
        if isinstance(v, (float, np.floating)) and v in (0.0, 1.0):
            return int(v), None
        if isinstance(v, str) and v.strip() in ("0", "1"):
            return int(v.strip()), None
        return None, f"invalid outcome {v!r} (expected 0 or 1)"

    def realized_quality(self, labelled) -> dict:
        """Realized metrics of labelled logged predictions (`outcome`, `probability`, `decision`)."""
        from churnops.monitoring.performance import quality

        return quality(labelled["outcome"], labelled["probability"], labelled.get("decision"))

    def quality_report(self, labelled, reference, target: str, threshold: float | None):
        """Evidently's classification quality (run, not saved) of labelled logged predictions
        (`outcome`, `prediction`) against the reference sample (`target`, `prediction`); None
        unless the window has both classes."""
        from evidently import BinaryClassification as Binary
        from evidently import DataDefinition, Report
        from evidently.presets import ClassificationPreset

        if labelled["outcome"].nunique() != 2:
            return None
        dd = DataDefinition(
            numerical_columns=["prediction"],
            categorical_columns=[target],
            classification=[Binary(target=target, prediction_probas="prediction")],
        )
        return _run_quality(
            Report([ClassificationPreset(probas_threshold=threshold)]), dd, labelled, reference, target, int
        )

    def performance_reasons(self, overall: dict, settings, min_labelled: int) -> list[str]:
        """Why the realized performance should start training: AUC below `auc_floor`."""
        auc, n = overall.get("auc_roc"), overall.get("n", 0)
        if auc is not None and n >= min_labelled and auc < settings.auc_floor:
            return [f"realized AUC {auc:.3f} < floor {settings.auc_floor} on {n} labelled predictions"]
        return []

    # ---- serving -------------------------------------------------------------------------------
    value_metric: ClassVar[str] = "probability"  # the `serving.metrics.Metrics` histogram of served values

    def decision_label(self, d: int | None) -> str:
        """The predictions counter's `decision` label of one prediction."""
        return str(d)

    feedback_summary: ClassVar[str] = "`outcome` 0/1 (or a `label`)"  # what /feedback takes, in a sentence

    def describe(self, contract) -> str:
        """What a prediction answers, for the API description."""
        name = contract.target.name
        return f"{name[:1].upper()}{name[1:]} probability and decision"

    def answer_schema(self) -> dict:
        """OpenAPI properties of a prediction's own fields (`answer`)."""
        return {
            "probability": {"type": "number", "minimum": 0, "maximum": 1},
            "churn": {"type": "boolean"},
            "decision": {"type": "integer", "enum": [0, 1]},
            "threshold": {"type": "number"},
        }

    def feedback_schema(self, contract) -> dict:
        """OpenAPI properties of a /feedback body besides `request_id` (`parse_feedback`)."""
        return {
            "outcome": {"type": "integer", "enum": [0, 1], "description": "realized outcome (1: positive)"},
            "label": {"type": "string", "enum": list(contract.target.labels or []), "description": "or a label"},
        }

    def decide(self, p: float, threshold: float | None) -> int:
        return int(p >= threshold)

    def answer(self, p: float, d: int | None, threshold: float | None) -> dict:
        """A prediction's own fields in an answer (HTTP, batch, stream)."""
        return {"probability": p, "churn": bool(d), "decision": d, "threshold": threshold}

    def log_fields(self, p: float, d: int | None) -> dict:
        """A prediction's own fields in the prediction log."""
        return {"probability": p, "decision": d}

    def output_columns(self, values: np.ndarray, threshold: float | None) -> dict[str, np.ndarray]:
        """A batch's prediction columns in the log (`log_fields`, column-wise)."""
        return {"probability": values, "decision": (values >= threshold).astype(np.int64)}

    def batch_items(self, rids: list[str], cols: dict[str, np.ndarray], m) -> list[bytes]:
        from serving.inference import batch_items

        return batch_items(rids, cols["probability"].tolist(), cols["decision"].tolist(), m)

    def decision_counts(self, cols: dict[str, np.ndarray]) -> dict[str, int]:
        """Rows per decision label (the predictions counter)."""
        positives = int(cols["decision"].sum())
        return {"1": positives, "0": len(cols["decision"]) - positives}

    def parse_feedback(self, data: dict, contract) -> tuple[Any, dict[str, str], str]:
        """(outcome 0/1, problems by field, answer key) of a /feedback body: `outcome` (or `actual`)
        0/1/true/false, or a `label` among the contract's labels."""
        details: dict[str, str] = {}
        outcome = data.get("outcome", data.get("actual"))
        label = data.get("label")
        if outcome is None and label is not None:
            outcome = contract.validator().outcome_of(label)  # the contract's labels, its compiled validator
            if outcome is None:
                details["label"] = (
                    f"unknown label {str(label)[:40]!r}; expected one of {contract.validator().label_names}"
                )
        elif isinstance(outcome, bool):
            outcome = int(outcome)
        if "label" not in details:
            if outcome not in (0, 1) or isinstance(outcome, float) and outcome not in (0.0, 1.0):
                details["outcome"] = "expected 0 or 1 (or a `label`)"
        return (int(outcome) if not details else None), details, "outcome"


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
        import pandas as pd

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
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(y))
        rest, test = train_test_split(idx, test_size=test_size, random_state=seed)
        train, val = train_test_split(rest, test_size=val_size / (1.0 - test_size), random_state=seed)
        return np.sort(train), np.sort(val), np.sort(test)

    # ---- model ---------------------------------------------------------------------------------
    def search_space(self) -> dict:
        from churnops.tuning import search_space

        space = search_space()
        space.pop("scale_pos_weight")  # a class weight: meaningless for a regression
        return space

    def make_estimator(self, params: dict, seed: int, n_estimators: int, threads: int, early_stopping: int | None):
        import xgboost as xgb

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
        import pandas as pd

        return pd.DataFrame({"prediction": [0.5]})

    def pyfunc_output(self, pred: np.ndarray, threshold: float | None):
        import pandas as pd

        return pd.DataFrame({"prediction": pred})

    def plots(self, ev: dict, folder) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        top = list(ev["feature_importance"].items())[:20][::-1]
        fig, ax = plt.subplots(figsize=(6, 5))
        ax.barh([k for k, _ in top], [v for _, v in top])
        ax.set_title("feature importance (gain share)")
        fig.tight_layout(), fig.savefig(folder / "feature_importance.png", dpi=90), plt.close(fig)

    # ---- labels and monitoring -----------------------------------------------------------------
    def observed(self, v, contract) -> tuple[Any, str | None]:
        """(float, None) for a logged observed value (a finite number, or its text, in the target's
        range), or (None, what is wrong with it)."""
        x = v
        if isinstance(v, str):
            try:
                x = float(v.strip())
            except ValueError:
                x = None
        if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) or not math.isfinite(x):
            return None, f"invalid value {v!r} (expected a finite number, the observed {contract.target.name})"
        t = contract.target
        if (t.min is not None and x < t.min) or (t.max is not None and x > t.max):
            lo, hi = ("-inf" if t.min is None else f"{t.min:g}"), ("inf" if t.max is None else f"{t.max:g}")
            return None, f"value {float(x):g} outside the target's range [{lo}, {hi}]"
        return float(x), None

    def realized_quality(self, labelled) -> dict:
        """MAE, RMSE, R² (None under 2 rows), share off by the tolerance, mean error, of labelled
        logged predictions (`outcome` = observed value, `prediction`)."""
        y = np.asarray(labelled["outcome"], dtype=np.float64)
        pred = np.asarray(labelled["prediction"], dtype=np.float64)
        if not len(y):
            return {"n": 0, "mae": None, "rmse": None, "r2": None, "bias": None}
        m = (
            regression_metrics(y, pred, self.tolerance)
            if len(y) >= 2
            else {"mae": float(np.mean(np.abs(pred - y))), "rmse": rmse(y, pred), "r2": None}
        )
        if len(y) < 2 and self.tolerance is not None:
            m["share_off"] = float(np.mean(np.abs(pred - y) > self.tolerance))
        return {"n": int(len(y)), **m, "bias": float(np.mean(pred - y)), "mean_observed": float(y.mean())}

    def rmse_ceiling(self, settings, training: dict | None) -> tuple[float | None, str]:
        """(ceiling on realized RMSE, where it comes from): `RMSE_CEILING`, else `RMSE_CEILING_FACTOR`
        times the training run's test RMSE (recorded with the reference), else none."""
        if settings.rmse_ceiling is not None:
            return float(settings.rmse_ceiling), "RMSE_CEILING"
        test = (training or {}).get("rmse")
        if test is not None and settings.rmse_ceiling_factor:
            f = settings.rmse_ceiling_factor
            return f * float(test), f"{f:g} x training test RMSE {float(test):.3f}"
        return None, "no RMSE_CEILING and no training test RMSE"

    def quality_report(self, labelled, reference, target: str, threshold: float | None):
        """Evidently's regression quality (MAE, RMSE, R², error plots; run, not saved) of labelled
        logged predictions (`outcome` = observed value, `prediction`) against the reference sample."""
        from evidently import DataDefinition, Report
        from evidently import Regression as EvRegression
        from evidently.presets import RegressionPreset

        dd = DataDefinition(
            numerical_columns=[target, "prediction"],
            regression=[EvRegression(target=target, prediction="prediction")],
        )
        return _run_quality(Report([RegressionPreset()]), dd, labelled, reference, target, float)

    def performance_reasons(self, overall: dict, settings, min_labelled: int) -> list[str]:
        """Why the realized performance should start training: RMSE above the ceiling."""
        value, n = overall.get("rmse"), overall.get("n", 0)
        ceiling, source = self.rmse_ceiling(settings, overall.get("training"))
        if value is not None and ceiling is not None and n >= min_labelled and value > ceiling:
            return [f"realized RMSE {value:.3f} > ceiling {ceiling:.3f} ({source}) on {n} labelled predictions"]
        return []

    # ---- serving -------------------------------------------------------------------------------
    value_metric: ClassVar[str] = "predicted_value"

    def decision_label(self, d: int | None) -> str:
        return "none"

    feedback_summary: ClassVar[str] = "the observed `value` of the target"

    def describe(self, contract) -> str:
        return f"Predicted {contract.target.name} (regression)"

    def answer_schema(self) -> dict:
        return {"prediction": {"type": "number", "description": "the predicted value of the target"}}

    def feedback_schema(self, contract) -> dict:
        t = contract.target
        p: dict = {"type": "number", "description": f"the observed {t.name} (also accepted as `outcome`)"}
        if t.min is not None:
            p["minimum"] = t.min
        if t.max is not None:
            p["maximum"] = t.max
        return {"value": p}

    def decide(self, p: float, threshold: float | None) -> None:
        return None

    def answer(self, p: float, d: int | None, threshold: float | None) -> dict:
        return {"prediction": p}

    def log_fields(self, p: float, d: int | None) -> dict:
        return {"prediction": p}

    def output_columns(self, values: np.ndarray, threshold: float | None) -> dict[str, np.ndarray]:
        return {"prediction": values}

    def batch_items(self, rids: list[str], cols: dict[str, np.ndarray], m) -> list[bytes]:
        from serving.inference import dumps

        tail = dumps({"model_run_id": m.run_id, "model_version": m.version, "route": m.route})
        d = dumps
        return [
            b'{"request_id":' + d(r) + b',"prediction":' + d(v) + b"," + tail[1:]
            for r, v in zip(rids, cols["prediction"].tolist())
        ]

    def decision_counts(self, cols: dict[str, np.ndarray]) -> dict[str, int]:
        return {"none": len(cols["prediction"])}

    def parse_feedback(self, data: dict, contract) -> tuple[Any, dict[str, str], str]:
        """(observed value, problems by field, answer key) of a /feedback body: `value` (or
        `outcome`/`actual`), a finite JSON number."""
        key = next((k for k in ("value", "outcome", "actual") if k in data), "value")
        v = data.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            shown = "null" if v is None else (repr(v)[:40] if isinstance(v, (int, float, str)) else type(v).__name__)
            return None, {key: f"expected a finite number (the observed {contract.target.name}), got {shown}"}, "value"
        t = contract.target
        if (t.min is not None and v < t.min) or (t.max is not None and v > t.max):
            return None, {key: f"value {v} outside the target's range [{t.min:g}, {t.max:g}]"}, "value"
        return float(v), {}, "value"


Task = BinaryClassification | Regression


def _run_quality(report, dd, labelled, reference, target: str, cast):
    """Run an Evidently quality `report` on (window's outcome, prediction) vs the reference's."""
    import pandas as pd
    from evidently import Dataset

    cur = pd.DataFrame(
        {target: labelled["outcome"].astype(cast).to_numpy(), "prediction": labelled["prediction"].to_numpy()}
    )
    ref = pd.DataFrame(
        {target: reference[target].astype(cast).to_numpy(), "prediction": reference["prediction"].to_numpy()}
    )
    return report.run(
        current_data=Dataset.from_pandas(cur, data_definition=dd),
        reference_data=Dataset.from_pandas(ref, data_definition=dd),
    )


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    return float(np.sqrt(np.mean((pred - y) ** 2))) if len(y) else float("nan")


def regression_metrics(y: np.ndarray, pred: np.ndarray, tolerance: float | None = None) -> dict[str, float]:
    """MAE, RMSE, R² and (with a tolerance) the share of |prediction - y| > tolerance."""
    from sklearn.metrics import mean_absolute_error, r2_score

    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
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
