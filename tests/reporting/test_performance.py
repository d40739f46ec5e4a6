"""Realized performance metrics against sklearn and hand computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnops.monitoring.performance import auc_roc, ece, quality, realized_performance


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random(500) * 0.5 + y * 0.3, 1)  # many ties
    assert auc_roc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert auc_roc(np.ones(5), np.arange(5)) is None


def test_quality_counts_and_calibration():
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([0.9, 0.4, 0.8, 0.1, 0.7, 0.2])
    d = (p >= 0.5).astype(int)  # tp=2 fp=1 fn=1
    q = quality(y, p, d)
    assert q["precision"] == pytest.approx(2 / 3) and q["recall"] == pytest.approx(2 / 3)
    assert q["f1"] == pytest.approx(2 / 3)
    assert q["brier"] == pytest.approx(np.mean((p - y) ** 2))
    # ECE by hand, 10 bins: each sample alone in its bin
    assert ece(y, p) == pytest.approx(np.mean(np.abs(p - y)))


def test_by_model_version_and_route():
    df = pd.DataFrame(
        {
            "outcome": [1, 0, 1, 0, 1, 0],
            "probability": [0.9, 0.1, 0.8, 0.3, 0.2, 0.7],
            "decision": [1, 0, 1, 0, 0, 1],
            "model_version": ["1", "1", "1", "2", "2", "2"],
            "route": ["champion"] * 3 + ["challenger"] * 3,
        }
    )
    out = realized_performance(df)
    groups = {(g["model_version"], g["route"]): g for g in out["by_model"]}
    assert groups[("1", "champion")]["auc_roc"] == 1.0
    assert groups[("2", "challenger")]["auc_roc"] == 0.0
    assert out["overall"]["n"] == 6
