"""Global attribution per window (mean |SHAP| per feature) and its drift against the training reference."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import xgboost as xgb

from churnops.explain import TreeExplainer
from churnops.features import FeatureEncoder
from churnops.monitoring.attribution import attribution_drift, mean_abs_contributions
from tests.support.monitoring import log_window


@pytest.fixture(scope="module")
def explainer(contract, reference_frame):
    enc = FeatureEncoder.from_contract(contract)
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1, random_state=1)
    model.fit(enc.transform_frame(reference_frame), reference_frame[contract.target.name].astype(int))
    return TreeExplainer(model.get_booster(), enc)


def test_mean_abs_contribution_is_xgboosts_on_the_seeded_sample(explainer, reference_frame, contract):
    got, n = mean_abs_contributions(explainer, reference_frame[contract.feature_names], sample=300, seed=4)
    rows = reference_frame[contract.feature_names].sample(300, random_state=4)
    raw = explainer.booster.predict(xgb.DMatrix(explainer.encoder.transform_frame(rows)), pred_contribs=True)
    by = {}
    for j, col in enumerate(explainer.encoder.output_names):
        name = col.split("=", 1)[0]
        by[name] = by.get(name, 0.0) + raw[:, j]
    assert n == 300
    for name in contract.feature_names:
        assert got[name] == pytest.approx(float(np.abs(by[name]).mean()), abs=1e-5)


def test_drift_of_attribution_by_ratio_and_rank():
    window = {"a": 3.0, "b": 1.0, "c": 0.2, "d": 0.5, "e": 0.4}
    reference = {"a": 1.0, "b": 1.1, "c": 1.2, "d": 0.5, "e": 0.45}
    d = attribution_drift(window, reference, ratio_limit=2.0, rank_limit=3)
    assert d["features"]["a"]["ratio"] == pytest.approx(3.0)
    assert (d["features"]["c"]["rank_reference"], d["features"]["c"]["rank_window"]) == (1, 5)
    assert d["features"]["c"]["rank_change"] == -4
    assert d["shifted"] == ["a", "c"]  # a: ratio 3 > 2; c: ratio 1/6 and 4 ranks down; b, d, e stayed


def test_the_report_shows_global_attribution_against_the_reference(
    explainer, tmp_path, settings_factory, contract, reference
):
    from churnops.store.sqlite import SQLiteStore
    from reporting.report import attribution_section, build_report

    store = SQLiteStore(tmp_path / "p.db")
    log_window(store, contract, 300, seed=5, end=time.time() - 1, hours=1, drift=["category"])
    s = settings_factory(mlflow_tracking_uri="http://127.0.0.1:9")
    summary = build_report(
        store, s, contract, window_hours=3, reference=reference, evidently=False, explainer=explainer
    )
    a = summary["attribution"]
    assert a["available"] and a["n_window"] == 300 and set(a["features"]) == set(contract.feature_names)
    on_disk = json.loads((s.reports_dir / f"{summary['id']}.json").read_text())
    assert on_disk["attribution"] == a
    html = attribution_section(a)
    assert "Global attribution" in html and "total_trans_ct" in html
    assert "unavailable: no model" in attribution_section({"available": False, "message": "no model"})
    store.close()
