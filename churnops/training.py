"""Fit and score one XGBoost model: the unit of work of a sweep trial and of the final refit."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from churnops.metrics import auc_roc


@dataclass
class Split:
    """Encoded train/validation/test arrays (float32 features; 0/1 labels or float targets)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def stratified_split(y: np.ndarray, test_size: float, val_size: float, seed: int):
    """Index arrays (train, val, test), stratified on y, reproducible for a seed."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_size, stratify=y, random_state=seed)
    val_share = val_size / (1.0 - test_size)
    train, val = train_test_split(rest, test_size=val_share, stratify=y[rest], random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


def make_classifier(params: dict, seed: int, n_estimators: int, threads: int, early_stopping: int | None):
    import xgboost as xgb

    return xgb.XGBClassifier(
        n_estimators=n_estimators,
        tree_method="hist",
        objective="binary:logistic",
        eval_metric="logloss",
        early_stopping_rounds=early_stopping,
        random_state=seed,
        n_jobs=threads or None,
        max_bin=256,
        **params,
    )


def classification_metrics(y: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUC-ROC, PR-AUC, log loss, F1/precision/recall at `threshold`."""
    from sklearn.metrics import (
        average_precision_score,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
    )

    pred = (proba >= threshold).astype(int)
    return {
        "auc_roc": auc_roc(y, proba),
        "pr_auc": float(average_precision_score(y, proba)),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-7, 1 - 1e-7))),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
    }


def fit_trial(params: dict, data: Split, seed: int, max_trees: int, early_stopping: int, threads: int, task) -> dict:
    """Train on train, early-stop on validation; return validation metrics, the loss the sweep
    minimises and tree count. `task` (a `churnops.tasks` object, passed in by the sweep) picks the
    estimator, the metrics and the loss."""
    t0 = time.perf_counter()
    model = task.make_estimator(params, seed, max_trees, threads, early_stopping)
    model.fit(data.X_train, data.y_train, eval_set=[(data.X_val, data.y_val)], verbose=False)
    best_iter = int(model.best_iteration)
    pred = task.predict(model, data.X_val, iteration_range=(0, best_iter + 1))
    metrics = task.metrics(data.y_val, pred)
    return {
        "metrics": metrics,
        "loss": task.loss(metrics),
        "n_trees": best_iter + 1,
        "val_proba": pred.astype(np.float32),
        "fit_seconds": time.perf_counter() - t0,
    }


def choose_threshold(y: np.ndarray, proba: np.ndarray, strategy: str, target_precision: float) -> float:
    """Decision threshold maximising F1, or the lowest reaching `target_precision`."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, proba)
    precision, recall = precision[:-1], recall[:-1]
    if strategy == "precision":
        ok = np.flatnonzero(precision >= target_precision)
        if len(ok):
            return float(thresholds[ok[0]])
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return float(thresholds[int(np.argmax(f1))])
