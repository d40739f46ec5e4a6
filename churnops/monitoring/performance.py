"""Realized performance: feedback outcomes joined to logged predictions.

The metrics are the task's (`outcomes_for(task)`, below: `realized_quality`). A regression: MAE, RMSE, R²,
mean error and the share off by the contract's tolerance on the observed values. A classifier: AUC-ROC and expected calibration error (churnops.metrics), precision, recall, F1 at the
served decision, Brier score and expected calibration error (10 equal-width bins), overall and
per model version / route.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churnops.metrics import auc_roc
from churnops.metrics import expected_calibration_error as ece
from churnops.tasks import Task, regression_metrics, rmse, task_for


def quality(y, p, decision=None) -> dict:
    """All realized metrics for one group of labelled predictions."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    d = np.asarray(decision, dtype=int) if decision is not None else (p >= 0.5).astype(int)
    tp = int(((d == 1) & (y == 1)).sum())
    fp = int(((d == 1) & (y == 0)).sum())
    fn = int(((d == 0) & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision and recall
        else (0.0 if precision is not None and recall is not None else None)
    )
    return {
        "n": int(len(y)),
        "positives": int(y.sum()),
        "auc_roc": auc_roc(y, p),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "brier": float(np.mean((p - y) ** 2)) if len(y) else None,
        "ece": ece(y, p) if len(y) else None,
        "accuracy": float((d == y).mean()) if len(y) else None,
    }


def realized_performance(labelled: pd.DataFrame, task=None, training: dict | None = None) -> dict:
    """`labelled` has columns outcome, model_version, route and the task's logged output (a
    classifier: probability, decision; a regression: prediction). `training`: the model run's test
    metrics, kept with the overall numbers for comparison (the regression's RMSE ceiling)."""
    task = task or task_for(None)
    outcomes = outcomes_for(task)
    if labelled is None or not len(labelled):
        return {"task": task.name, "n": 0, "overall": None, "by_model": []}
    overall = outcomes.realized_quality(labelled)
    if training:
        overall["training"] = {k: v for k, v in training.items() if isinstance(v, (int, float))}
    groups = []
    keys = labelled[["model_version", "route"]].astype(str).fillna("none")
    for (ver, route), g in labelled.groupby([keys["model_version"], keys["route"]], sort=True):
        groups.append({"model_version": ver, "route": route, **outcomes.realized_quality(g)})
    return {"task": task.name, "n": int(len(labelled)), "overall": overall, "by_model": groups}


# ---- per task: valid observed outcomes, realized quality, Evidently's quality report, the trigger's reasons


class BinaryOutcomes:
    """A classifier's realized performance: outcomes 0/1, AUC, calibration; AUC floor."""

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


@dataclass(frozen=True)
class RegressionOutcomes:
    """A regression's realized performance: observed values, MAE/RMSE/R², the RMSE ceiling."""

    tolerance: float | None = None

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


Outcomes = BinaryOutcomes | RegressionOutcomes


def outcomes_for(task: Task) -> Outcomes:
    """The realized-performance side of `task` (a `churnops.tasks` object)."""
    if task.name == "regression":
        return RegressionOutcomes(tolerance=task.tolerance)
    return BinaryOutcomes()


def _run_quality(report, dd, labelled, reference, target: str, cast):
    """Run an Evidently quality `report` on (window's outcome, prediction) vs the reference's."""
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
