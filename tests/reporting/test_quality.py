"""Data quality per window and feature: missing, out of the training range, unseen categories."""

from __future__ import annotations

import numpy as np

from churnops.monitoring.drift import Reference
from churnops.monitoring.gauges import drift_exposition
from churnops.monitoring.quality import data_quality, quality_reasons


def test_quality_counts_missing_out_of_range_and_unseen(reference_frame, contract, settings_factory):
    settings = settings_factory()
    ref_frame = reference_frame[reference_frame["card_category"] != "platinum"]  # training never saw it
    reference = Reference.from_frame(ref_frame, contract)
    window = ref_frame.sample(200, random_state=0).reset_index(drop=True)
    top = ref_frame["total_trans_ct"].max()
    window.loc[0:19, "total_trans_ct"] = top + 1  # 20 of 200 above the training max: 10 %
    window.loc[20:79, "customer_age"] = np.nan  # 60 of 200 missing: 30 %
    window.loc[0:3, "card_category"] = "platinum"  # 4 of 200 unseen: 2 %
    window.loc[0:0, "dependent_count"] = ref_frame["dependent_count"].max() + 1  # 1 of 200: 0.5 %, tolerated
    q = data_quality(reference, window, contract, settings)
    f = q["features"]
    assert f["total_trans_ct"]["out_of_range_rate"] == 0.10 and f["total_trans_ct"]["status"] == "fail"
    assert f["total_trans_ct"]["reference_max"] == top
    assert f["customer_age"]["missing_rate"] == 0.30 and f["customer_age"]["status"] == "fail"
    assert f["card_category"]["unseen_categories"] == ["platinum"]
    assert f["card_category"]["unseen_rate"] == 0.02 and f["card_category"]["status"] == "fail"
    assert f["dependent_count"]["out_of_range_rate"] == 0.005 and f["dependent_count"]["status"] == "ok"
    assert q["status"] == "fail"
    assert q["failed_features"] == ["card_category", "customer_age", "total_trans_ct"]
    text = drift_exposition({"quality": q}).decode()
    assert 'churn_feature_missing_rate{feature="customer_age"} 0.3' in text
    assert "churn_data_quality_failed_features 3.0" in text and "churn_data_quality_status 1.0" in text
    # a failure is a retraining reason only when asked for
    assert quality_reasons(q, settings) == []
    reasons = quality_reasons(q, settings_factory(retrain_on_quality_failure=True))
    assert len(reasons) == 1 and "3 feature(s)" in reasons[0] and "customer_age: 30.0% missing" in reasons[0]


def test_clean_window_passes(reference_frame, contract, settings_factory):
    reference = Reference.from_frame(reference_frame, contract)
    q = data_quality(reference, reference_frame.sample(300, random_state=1), contract, settings_factory())
    assert q["status"] == "ok" and q["failed_features"] == []
    assert all(f["status"] == "ok" for f in q["features"].values())
