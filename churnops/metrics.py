"""Scores of a labelled sample: AUC-ROC and calibration error, one definition for training,
promotion rules and realized performance."""

from __future__ import annotations

import numpy as np


def auc_roc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Mann-Whitney AUC-ROC (ties count half, as sklearn's `roc_auc_score`); None when only one
    class is present."""
    y = np.asarray(y, dtype=int)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return None
    from scipy.stats import rankdata  # lazy: scipy.stats is ~400 modules; the servers import this module

    r = rankdata(p)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |fraction positive - mean predicted| over `bins` equal-width probability
    bins; NaN for an empty sample."""
    y, p = np.asarray(y, dtype=float), np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    if len(y) == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    sp = np.bincount(idx, weights=p, minlength=bins)
    sy = np.bincount(idx, weights=y, minlength=bins)
    return float(np.sum(np.abs(sp - sy)) / len(y))
