"""Realized performance: feedback outcomes joined to logged predictions.

The metrics are the task's (`churnops.tasks`: `realized_quality`). A regression: MAE, RMSE, R²,
mean error and the share off by the contract's tolerance on the observed values. A classifier: AUC-ROC and expected calibration error (churnops.metrics), precision, recall, F1 at the
served decision, Brier score and expected calibration error (10 equal-width bins), overall and
per model version / route.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnops.metrics import auc_roc
from churnops.metrics import expected_calibration_error as ece


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
    from churnops.tasks import task_for

    task = task or task_for(None)
    if labelled is None or not len(labelled):
        return {"task": task.name, "n": 0, "overall": None, "by_model": []}
    overall = task.realized_quality(labelled)
    if training:
        overall["training"] = {k: v for k, v in training.items() if isinstance(v, (int, float))}
    groups = []
    keys = labelled[["model_version", "route"]].astype(str).fillna("none")
    for (ver, route), g in labelled.groupby([keys["model_version"], keys["route"]], sort=True):
        groups.append({"model_version": ver, "route": route, **task.realized_quality(g)})
    return {"task": task.name, "n": int(len(labelled)), "overall": overall, "by_model": groups}
