"""Exact tree SHAP per contract feature (churnops/explain.py) against XGBoost's own numbers."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from churnops.cleaning import clean_frame
from churnops.contract import load_contract
from churnops.explain import CannotExplain, TreeExplainer, explain_records, explainer_for
from churnops.features import FeatureEncoder
from churnops.synthetic import generate_customers


@pytest.fixture(scope="module")
def fitted():
    contract = load_contract("bank_churners")
    clean = clean_frame(generate_customers(800, seed=5), contract)
    enc = FeatureEncoder.from_contract(contract)
    X = enc.transform_frame(clean)
    y = clean[contract.target.name].to_numpy().astype(int)
    model = xgb.XGBClassifier(n_estimators=25, max_depth=4, learning_rate=0.3, n_jobs=1, random_state=5)
    model.fit(X, y)
    records = clean[contract.feature_names].head(40).to_dict("records")
    records = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in records]
    return contract, enc, model.get_booster(), records


class FakeBundle:
    def __init__(self, encoder, booster=None, booster_bytes=None):
        self.encoder, self.booster, self.booster_bytes, self.meta, self.explainer = (
            encoder,
            booster,
            booster_bytes,
            {},
            None,
        )


def expected_by_feature(booster, enc, X) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """XGBoost's pred_contribs summed over each contract feature's columns, by the column NAMES."""
    raw = booster.predict(xgb.DMatrix(X), pred_contribs=True)
    by: dict[str, np.ndarray] = {}
    for j, col in enumerate(enc.output_names):
        name = col.split("=", 1)[0]
        by[name] = by.get(name, 0.0) + raw[:, j].astype(np.float64)
    return by, raw[:, -1], booster.predict(xgb.DMatrix(X), output_margin=True)


def test_contributions_equal_xgboost_and_add_up_to_the_margin(fitted):
    contract, enc, booster, records = fitted
    X = enc.transform_records(records)
    by, bias, margin = expected_by_feature(booster, enc, X)
    got = explain_records(FakeBundle(enc, booster), records, contract, top_k=3)
    assert len(got) == len(records) and set(got[0]["contributions"]) == set(contract.feature_names)
    for i, e in enumerate(got):
        for name in contract.feature_names:
            assert e["contributions"][name] == pytest.approx(float(by[name][i]), abs=1e-5)
        assert e["bias"] == pytest.approx(float(bias[i]), abs=1e-5)
        assert sum(e["contributions"].values()) + e["bias"] == pytest.approx(float(margin[i]), abs=1e-5)
        assert e["margin"] == pytest.approx(float(margin[i]), abs=1e-5)
    # a one-hot feature really is a sum of several columns (card_category: 4 columns)
    cols = [j for j, c in enumerate(enc.output_names) if c.startswith("card_category=")]
    assert len(cols) == 4


def test_top_k_in_the_contracts_words_with_direction(fitted):
    contract, enc, booster, records = fitted
    e = explain_records(FakeBundle(enc, booster), records[:1], contract, top_k=3)[0]
    mags = sorted((abs(v) for v in e["contributions"].values()), reverse=True)
    assert [abs(t["contribution"]) for t in e["top"]] == pytest.approx(mags[:3])
    for t in e["top"]:
        assert t["label"] == contract.features[t["feature"]].label  # the contract's words
        assert t["direction"] == ("raises" if t["contribution"] > 0 else "lowers")
        assert t["value"] == records[0][t["feature"]]
        assert f"{t['direction']} the churn probability" in t["text"] and "log-odds" in t["text"]
    assert "log-odds" in e["units"]


def test_booster_from_bytes_gives_the_same_numbers(fitted):
    contract, enc, booster, records = fitted
    raw = bytes(booster.save_raw("json"))
    a = explain_records(FakeBundle(enc, booster), records[:5], contract)
    b = explain_records(FakeBundle(enc, None, raw), records[:5], contract)
    for x, y in zip(a, b):
        assert x["contributions"] == pytest.approx(y["contributions"], abs=1e-6)


def test_models_that_cannot_explain_say_why(fitted):
    _, enc, _, _ = fitted

    class ImageBundle:  # what an image model's bundle looks like to the explainer: no encoder
        meta: dict = {}

    with pytest.raises(CannotExplain, match="image model"):
        explainer_for(ImageBundle())
    with pytest.raises(CannotExplain, match="no XGBoost booster"):
        explainer_for(FakeBundle(enc))


def test_wrong_matrix_width_is_refused(fitted):
    _, enc, booster, _ = fitted
    with pytest.raises(ValueError, match="encoded columns"):
        TreeExplainer(booster, enc).contributions(np.zeros((2, 3), dtype=np.float32))
