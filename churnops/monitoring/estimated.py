"""Estimated performance without labels: confidence-based performance estimation (CBPE).

A binary classifier's probabilities, once calibrated, are the chance that each row is positive.
Summed over a window they give the *expected* confusion matrix at the served decision and the
expected ROC AUC, before any label arrives:

* calibration: isotonic regression fitted on the reference's probabilities vs labels (the model
  run's held-out test split, `calibration_reference.csv`, else the training reference sample,
  which is optimistic: the model saw those rows). A reference without both says "unavailable".
* expected confusion matrix: TP = sum of p over rows decided positive, FP = sum of 1 - p there,
  FN / TN the same over rows decided negative; precision, recall, F1, accuracy from it.
* expected AUC: the expected number of (positive, negative) pairs ranked correctly (ties half)
  over the expected number of such pairs, E[n1 n0] = P N - sum p (1 - p), ranking by the raw score.
* band: the sampling error of the realized AUC on `n` rows, the standard deviation of the AUC of
  `BOOTSTRAPS` samples of `n` rows drawn from the calibration reference; the band is the estimate
  +- `BAND_SIGMAS` of it (as NannyML's CBPE: 3 sigma), clipped to [0, 1].

The method holds under covariate shift (P(y | x) unchanged); under concept drift the calibration
no longer describes the window and the estimate is wrong (bench-loop measures both). Regression
(direct loss estimation) is not implemented: the summary says "not available".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from churnops.metrics import auc_roc

METHOD = "CBPE"
BOOTSTRAPS = 100
BAND_SIGMAS = 3.0
MIN_CALIBRATION_ROWS = 50
CALIBRATION_FILE = "calibration_reference.csv"  # columns probability, label (held-out test split)


@dataclass
class Calibration:
    """Reference probabilities and labels, with the isotonic map fitted on them."""

    probabilities: np.ndarray
    labels: np.ndarray
    source: str
    model: IsotonicRegression | None = field(default=None, repr=False)

    @classmethod
    def fit(cls, probabilities, labels, source: str) -> "Calibration":
        p = np.asarray(probabilities, dtype=float)
        y = np.asarray(labels, dtype=float)
        ok = np.isfinite(p) & np.isfinite(y)
        p, y = p[ok], y[ok].astype(int)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
        iso.fit(p, y)
        return cls(p, y, source, iso)

    def problem(self) -> str | None:
        """Why this calibration cannot be used (None: it can)."""
        if len(self.labels) < MIN_CALIBRATION_ROWS:
            return f"only {len(self.labels)} reference rows with probability and label (need {MIN_CALIBRATION_ROWS})"
        if self.labels.min() == self.labels.max():
            return "the reference labels hold one class only"
        return None

    def calibrate(self, scores: np.ndarray) -> np.ndarray:
        return np.clip(self.model.predict(np.asarray(scores, dtype=float)), 0.0, 1.0)


def calibration_from_frames(calibration: pd.DataFrame | None, reference: pd.DataFrame | None, target: str):
    """The `Calibration` of a model run: its held-out file first, else the reference sample when it
    has the target and the logged prediction; None when neither has both."""
    if calibration is not None and {"probability", "label"} <= set(calibration.columns):
        return Calibration.fit(calibration["probability"], calibration["label"], "held-out test split")
    if reference is not None and {"prediction", target} <= set(reference.columns):
        y = pd.to_numeric(reference[target], errors="coerce")
        return Calibration.fit(reference["prediction"], y, "training reference sample (optimistic)")
    return None


def expected_confusion(calibrated: np.ndarray, decision: np.ndarray) -> dict:
    """Expected TP, FP, FN, TN and the metrics that follow, given calibrated probabilities."""
    p = np.asarray(calibrated, dtype=float)
    d = np.asarray(decision, dtype=bool)
    tp, fp = float(p[d].sum()), float((1 - p[d]).sum())
    fn, tn = float(p[~d].sum()), float((1 - p[~d]).sum())
    precision = tp / (tp + fp) if tp + fp > 0 else None
    recall = tp / (tp + fn) if tp + fn > 0 else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else None
    n = len(p)
    return {
        "confusion_matrix": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / n if n else None,
    }


def expected_auc(scores: np.ndarray, calibrated: np.ndarray) -> float | None:
    """Expected ROC AUC of `scores` when row i is positive with probability `calibrated[i]`:
    sum over pairs i != j with s_i > s_j of p_i (1 - p_j) (ties: half) over P N - sum p (1 - p)."""
    s = np.asarray(scores, dtype=float)
    p = np.asarray(calibrated, dtype=float)
    q = 1.0 - p
    denom = p.sum() * q.sum() - float((p * q).sum())
    if denom <= 1e-12:
        return None
    uniq, inv = np.unique(s, return_inverse=True)
    gp = np.bincount(inv, weights=p, minlength=len(uniq))  # expected positives per score
    gq = np.bincount(inv, weights=q, minlength=len(uniq))  # expected negatives per score
    gpq = np.bincount(inv, weights=p * q, minlength=len(uniq))
    below = np.concatenate([[0.0], np.cumsum(gq)[:-1]])  # expected negatives with a lower score
    ties = gp * gq - gpq  # pairs i != j inside a group
    return float(np.clip((np.sum(gp * below) + 0.5 * np.sum(ties)) / denom, 0.0, 1.0))


def auc_sampling_error(cal: Calibration, n: int, seed: int = 0, boots: int = BOOTSTRAPS) -> float | None:
    """Standard deviation of the realized AUC of `n` rows drawn (with replacement) from the reference."""
    rng = np.random.default_rng(seed)
    m = len(cal.labels)
    aucs = []
    for _ in range(boots):
        idx = rng.integers(0, m, size=n)
        a = auc_roc(cal.labels[idx], cal.probabilities[idx])
        if a is not None:
            aucs.append(a)
    return float(np.std(aucs, ddof=1)) if len(aucs) > 1 else None


def unavailable(reason: str, status: str = "unavailable") -> dict:
    return {"method": METHOD, "available": False, "status": status, "message": reason}


def estimate_performance(
    scores,
    calibration: Calibration | None,
    threshold: float = 0.5,
    decision=None,
    min_rows: int = 100,
    task: str = "binary_classification",
    seed: int = 0,
) -> dict:
    """The CBPE estimate of one window's scores (a classifier's logged probabilities).

    `decision` is the served decision per row (default: score >= threshold)."""
    if task != "binary_classification":
        return unavailable(
            f"estimated performance is implemented for binary classifiers only; a {task} model has none "
            "(direct loss estimation is not implemented)"
        )
    if calibration is None:
        return unavailable("the model run logged no reference probabilities with labels (an older model)")
    why = calibration.problem()
    if why:
        return unavailable(f"cannot calibrate: {why}")
    s = np.asarray(scores, dtype=float)
    keep = np.isfinite(s)
    s = s[keep]
    if len(s) < min_rows:
        return unavailable(f"not enough scored rows to estimate (n={len(s)} < min {min_rows})", "insufficient_data")
    d = (s >= threshold) if decision is None else np.asarray(decision, dtype=float)[keep] >= 0.5
    p = calibration.calibrate(s)
    out = {
        "method": METHOD,
        "available": True,
        "status": "ok",
        "n": int(len(s)),
        "threshold": float(threshold),
        "calibration": {"method": "isotonic", "source": calibration.source, "n": int(len(calibration.labels))},
        "expected_positive_rate": float(p.mean()),
        **expected_confusion(p, d),
    }
    auc = expected_auc(s, p)
    se = auc_sampling_error(calibration, len(s), seed)
    out["auc_roc"] = auc
    out["auc_sampling_error"] = se
    if auc is not None and se is not None:
        out["auc_band"] = [max(0.0, auc - BAND_SIGMAS * se), min(1.0, auc + BAND_SIGMAS * se)]
    else:
        out["auc_band"] = None
    return out


def window_estimate(df: pd.DataFrame, reference, settings, task: str, realized: dict | None = None) -> dict:
    """`estimate_performance` of a loaded monitoring window (columns probability, decision) against
    the reference's calibration; the realized AUC of the labelled rows beside it when known."""
    decision = None
    if "decision" in df:
        dec = pd.to_numeric(df["decision"], errors="coerce")
        if dec.notna().all():
            decision = dec.to_numpy(dtype=float)
    out = estimate_performance(
        df["probability"].to_numpy(dtype=float) if "probability" in df else np.array([]),
        getattr(reference, "calibration", None),
        threshold=getattr(reference, "threshold", 0.5),
        decision=decision,
        min_rows=settings.estimated_min_rows,
        task=task,
        seed=settings.seed,
    )
    overall = (realized or {}).get("overall") or {}
    if out["available"] and overall.get("auc_roc") is not None:
        out["realized_auc"] = overall["auc_roc"]
        out["realized_n"] = overall.get("n")
        if out.get("auc_roc") is not None:
            out["auc_error"] = out["auc_roc"] - overall["auc_roc"]
    return out
