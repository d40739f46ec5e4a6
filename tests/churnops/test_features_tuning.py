"""Feature encoder, search space, split and threshold: unit tests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from churnops.cleaning import clean_frame
from churnops.contract import load_contract
from churnops.features import FeatureEncoder
from churnops.synthetic import generate_customers
from churnops.training import choose_threshold, stratified_split
from churnops.tuning import normalise_params, search_space


@pytest.fixture(scope="module")
def contract():
    return load_contract()


@pytest.fixture(scope="module")
def clean(contract):
    return clean_frame(generate_customers(500, seed=3), contract)


def test_encoder_layout(contract):
    enc = FeatureEncoder.from_contract(contract)
    names = enc.output_names
    assert len(enc.numeric) == 14 and [n for n, _ in enc.ordinal] == ["education_level", "income_category"]
    assert "card_category=platinum" in names and "marital_status=unknown" in names
    assert enc.width == 14 + 2 + (2 + 4 + 4)
    assert FeatureEncoder.from_json(enc.to_json()) == enc


def test_encoder_frame_and_records_agree(contract, clean):
    enc = FeatureEncoder.from_contract(contract)
    X = enc.transform_frame(clean)
    recs = clean[contract.feature_names].to_dict("records")
    recs = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in recs]
    Xr = enc.transform_records(recs)
    assert X.dtype == np.float32 and X.shape == (500, enc.width)
    np.testing.assert_array_equal(np.isnan(X), np.isnan(Xr))
    np.testing.assert_allclose(np.nan_to_num(X), np.nan_to_num(Xr))


def test_encoder_values(contract):
    enc = FeatureEncoder.from_contract(contract)
    rec = {n: 1.0 for n in enc.numeric} | {
        "education_level": "doctorate",
        "income_category": None,
        "gender": "m",
        "marital_status": "unknown",
        "card_category": "gold",
    }
    x = enc.transform_records([rec])[0]
    names = enc.output_names
    assert x[names.index("education_level")] == 5.0  # last of 6 ordered levels
    assert math.isnan(x[names.index("income_category")])  # unknown ordinal -> missing
    assert x[names.index("gender=m")] == 1 and x[names.index("gender=f")] == 0
    assert x[names.index("card_category=gold")] == 1 and x[names.index("card_category=blue")] == 0
    unseen = enc.transform_records([rec | {"card_category": "titanium"}])[0]
    assert sum(unseen[names.index(f"card_category={c}")] for c in ("blue", "silver", "gold", "platinum")) == 0


def test_search_space_covers_the_issue_parameters():
    from hyperopt.pyll.stochastic import sample

    space = search_space()
    assert set(space) == {
        "learning_rate",
        "max_depth",
        "min_child_weight",
        "subsample",
        "colsample_bytree",
        "gamma",
        "reg_alpha",
        "reg_lambda",
        "scale_pos_weight",
    }
    rng = np.random.default_rng(0)
    draws = [normalise_params(sample(space, rng=rng)) for _ in range(300)]
    lr = np.array([d["learning_rate"] for d in draws])
    assert lr.min() >= 0.02 and lr.max() <= 0.3
    # log scale: about as many draws below the geometric mean as above
    assert 0.4 < np.mean(lr < math.sqrt(0.02 * 0.3)) < 0.6
    assert all(isinstance(d["max_depth"], int) and 2 <= d["max_depth"] <= 10 for d in draws)
    assert all(0.5 <= d["subsample"] <= 1 for d in draws)


def test_stratified_split_is_seeded_and_disjoint():
    y = np.array([1] * 160 + [0] * 840)
    a = stratified_split(y, 0.15, 0.15, 42)
    b = stratified_split(y, 0.15, 0.15, 42)
    c = stratified_split(y, 0.15, 0.15, 7)
    assert all(np.array_equal(x, z) for x, z in zip(a, b))
    assert not np.array_equal(a[2], c[2])
    tr, va, te = a
    assert len(set(tr) | set(va) | set(te)) == 1000 and len(te) == 150
    for part in a:
        assert abs(y[part].mean() - 0.16) < 0.02


def test_threshold_strategies():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.35, 0.6, 0.4, 0.7, 0.8, 0.9])
    t_f1 = choose_threshold(y, p, "max_f1", 0.9)
    t_prec = choose_threshold(y, p, "precision", 1.0)
    assert t_f1 == pytest.approx(0.4)  # F1 0.889 at 0.4
    assert t_prec == pytest.approx(0.7)  # lowest threshold with precision 1.0
    pred = (p >= t_prec).astype(int)
    assert pred[y == 0].sum() == 0
