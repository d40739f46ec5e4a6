"""A classifier's test evaluation: threshold from validation, test metrics, confusion matrix,
calibration, feature importance, and their plots (the binary task's `evaluate` and `plots`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from churnops.metrics import auc_roc
from churnops.settings import Settings
from churnops.training import choose_threshold, classification_metrics


def evaluate_classifier(model, prep, s: Settings) -> dict:
    """Threshold from validation; metrics, confusion matrix, calibration on the held-out test set."""
    from sklearn.calibration import calibration_curve  # training only (lazy-imports)
    from sklearn.metrics import confusion_matrix

    val_proba = model.predict_proba(prep.split.X_val)[:, 1]
    threshold = choose_threshold(prep.split.y_val, val_proba, s.threshold_strategy, s.target_precision)
    test_proba = model.predict_proba(prep.split.X_test)[:, 1]
    metrics = classification_metrics(prep.split.y_test, test_proba, threshold)
    cm = confusion_matrix(prep.split.y_test, (test_proba >= threshold).astype(int), labels=[0, 1])
    frac_pos, mean_pred = calibration_curve(prep.split.y_test, test_proba, n_bins=10, strategy="quantile")
    importance = dict(zip(prep.encoder.output_names, model.feature_importances_.astype(float).tolist()))
    return {
        "threshold": threshold,
        "metrics": metrics,
        "test_proba": test_proba,
        "confusion_matrix": cm.tolist(),
        "calibration": {"mean_predicted": mean_pred.tolist(), "fraction_positive": frac_pos.tolist()},
        "feature_importance": dict(sorted(importance.items(), key=lambda kv: -kv[1])),
    }


def auc(y: np.ndarray, proba: np.ndarray) -> float:
    """AUC-ROC, NaN when `y` has one class (the improvement rule then fails, it cannot compare)."""
    value = auc_roc(y, proba)
    return float("nan") if value is None else value


def classifier_plots(ev: dict, folder: Path) -> None:
    """Confusion matrix, calibration curve and feature importance of a classifier's test evaluation, as PNGs."""
    import matplotlib  # training only (lazy-imports)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the Agg backend

    cm = np.array(ev["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set_xticks([0, 1], ["stay", "churn"]), ax.set_yticks([0, 1], ["stay", "churn"])
    ax.set_xlabel("predicted"), ax.set_ylabel("actual"), ax.set_title(f"test @ threshold {ev['threshold']:.3f}")
    fig.tight_layout(), fig.savefig(folder / "confusion_matrix.png", dpi=90), plt.close(fig)

    cal = ev["calibration"]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.plot(cal["mean_predicted"], cal["fraction_positive"], "o-")
    ax.set_xlabel("mean predicted"), ax.set_ylabel("fraction churned"), ax.set_title("calibration (test)")
    fig.tight_layout(), fig.savefig(folder / "calibration_curve.png", dpi=90), plt.close(fig)

    top = list(ev["feature_importance"].items())[:20][::-1]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.barh([k for k, _ in top], [v for _, v in top])
    ax.set_title("feature importance (gain share)")
    fig.tight_layout(), fig.savefig(folder / "feature_importance.png", dpi=90), plt.close(fig)
