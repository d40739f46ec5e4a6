"""Estimated performance before labels (CBPE): hand-computed toy cases, covariate shift, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnops.metrics import auc_roc
from churnops.monitoring.estimated import (
    Calibration,
    calibration_from_frames,
    estimate_performance,
    expected_auc,
    expected_confusion,
)


def test_expected_confusion_matrix_of_calibrated_toy_case_by_hand():
    # four rows, calibrated probabilities 0.9 0.8 0.3 0.1, decided positive at 0.5:
    # TP = 0.9 + 0.8, FP = 0.1 + 0.2, FN = 0.3 + 0.1, TN = 0.7 + 0.9
    p = np.array([0.9, 0.8, 0.3, 0.1])
    out = expected_confusion(p, p >= 0.5)
    cm = out["confusion_matrix"]
    assert cm == pytest.approx({"tp": 1.7, "fp": 0.3, "fn": 0.4, "tn": 1.6})
    assert out["precision"] == pytest.approx(0.85)
    assert out["recall"] == pytest.approx(1.7 / 2.1)
    assert out["accuracy"] == pytest.approx(3.3 / 4)


def test_expected_auc_of_toy_case_by_hand():
    # pairs (i above j): 0.9*(0.2+0.7+0.9) + 0.8*(0.7+0.9) + 0.3*0.9 = 3.17;
    # E[n1 n0] = P N - sum p(1-p) = 2.1*1.9 - 0.55 = 3.44
    p = np.array([0.9, 0.8, 0.3, 0.1])
    assert expected_auc(p, p) == pytest.approx(3.17 / 3.44)
    # tied scores rank half and half: AUC 0.5
    assert expected_auc(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    # all certain: no uncertainty about the classes -> the AUC of those labels (1.0 here)
    assert expected_auc(np.array([0.9, 0.2]), np.array([1.0, 0.0])) == pytest.approx(1.0)
    assert expected_auc(np.array([0.9, 0.2]), np.array([1.0, 1.0])) is None  # no negatives expected


def test_expected_auc_is_the_mean_realized_auc_when_calibrated():
    rng = np.random.default_rng(3)
    p = rng.beta(1.2, 3.0, 400)
    realized = [auc_roc(rng.random(400) < p, p) for _ in range(2000)]
    assert expected_auc(p, p) == pytest.approx(np.mean(realized), abs=0.004)


def synthetic(n: int, mean: float, sd: float, seed: int):
    """x ~ N(mean, sd); true P(y=1 | x) = sigmoid(1.5 x - 1.2); the model's score is the
    miscalibrated but monotone sigmoid(3 x), so isotonic calibration has work to do."""
    rng = np.random.default_rng(seed)
    x = rng.normal(mean, sd, n)
    truth = 1 / (1 + np.exp(-(1.5 * x - 1.2)))
    y = (rng.random(n) < truth).astype(int)
    score = 1 / (1 + np.exp(-3 * x))
    return score, y


def test_estimated_auc_tracks_realized_auc_under_covariate_shift():
    ref_s, ref_y = synthetic(20_000, 0.0, 1.0, seed=1)
    cal = Calibration.fit(ref_s, ref_y, "test")
    ref_auc = auc_roc(ref_y, ref_s)
    for seed, (mean, sd) in enumerate([(0.0, 1.0), (0.8, 0.6), (-0.5, 0.5), (1.2, 0.4)], start=10):
        s, y = synthetic(5000, mean, sd, seed)
        realized = auc_roc(y, s)
        est = estimate_performance(s, cal, threshold=0.5, min_rows=100)
        assert est["available"] and est["status"] == "ok"
        assert abs(est["auc_roc"] - realized) <= 0.02, (mean, sd, est["auc_roc"], realized)
        lo, hi = est["auc_band"]
        assert lo <= realized <= hi
        d = s >= 0.5
        tp = int((d & (y == 1)).sum())
        assert est["confusion_matrix"]["tp"] == pytest.approx(tp, rel=0.1)
    # the shift moves the AUC itself (narrower inputs: a lower AUC), so the test is not trivial
    s, y = synthetic(5000, 1.2, 0.4, 13)
    assert ref_auc - auc_roc(y, s) > 0.1


def test_unavailable_and_too_few_rows_say_why():
    s, y = synthetic(2000, 0.0, 1.0, seed=2)
    cal = Calibration.fit(s, y, "test")
    none = estimate_performance(s, None)
    assert none["available"] is False and "no reference probabilities" in none["message"]
    few = estimate_performance(s[:50], cal, min_rows=100)
    assert few["status"] == "insufficient_data" and "n=50 < min 100" in few["message"]
    reg = estimate_performance(s, cal, task="regression")
    assert reg["available"] is False and "binary classifiers only" in reg["message"]
    one_class = estimate_performance(s, Calibration.fit(s, np.zeros_like(y), "test"))
    assert one_class["available"] is False and "one class" in one_class["message"]


def test_calibration_prefers_held_out_file_and_needs_labels():
    ref = pd.DataFrame({"prediction": [0.1, 0.9] * 40, "churn": [0, 1] * 40})
    held = pd.DataFrame({"probability": [0.2, 0.7] * 40, "label": [0, 1] * 40})
    assert calibration_from_frames(held, ref, "churn").source == "held-out test split"
    assert calibration_from_frames(None, ref, "churn").source.startswith("training reference")
    assert calibration_from_frames(None, ref.drop(columns="churn"), "churn") is None


def test_window_summary_gauges_and_trigger_carry_the_estimate(settings_factory, contract, reference_frame, now):
    from churnops.monitoring.gauges import drift_exposition
    from churnops.monitoring.reference import reference_from_folder
    from churnops.monitoring.window import window_summary
    from reporting.trigger import reasons_for
    from tests.support.memory_store import MemoryStore
    from tests.support.monitoring import cache_reference, log_window

    settings = settings_factory(estimated_min_rows=100)
    store = MemoryStore()
    log_window(store, contract, 400, seed=7, end=now)
    cache_reference(settings, reference_frame)
    ref = reference_from_folder(settings.state_dir / "reference-cache" / "ref-run", contract, "ref-run")
    assert ref.calibration is not None
    summary = window_summary(store, settings, contract, 3.0, now, reference=ref)
    est = summary["estimated_performance"]
    assert est["available"] and est["n"] == 400 and 0.5 < est["auc_roc"] < 1.0
    assert est["auc_band"][0] < est["auc_roc"] < est["auc_band"][1]
    assert est["realized_auc"] == summary["performance"]["overall"]["auc_roc"]
    text = drift_exposition(summary).decode()
    assert f"churn_estimated_auc {est['auc_roc']}" in text and "churn_estimated_performance_available 1.0" in text
    assert reasons_for(None, None, settings, estimated=est) == []  # the floor is off by default
    floored = settings_factory(estimated_auc_floor=0.999)
    reasons = reasons_for(None, None, floored, estimated=est)
    assert len(reasons) == 1 and "ESTIMATED_AUC_FLOOR 0.999" in reasons[0] and "estimated AUC" in reasons[0]
