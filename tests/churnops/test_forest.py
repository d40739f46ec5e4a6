"""The compiled tree evaluator: the same probabilities as XGBoost, or no evaluator at all."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from churnops.forest import Forest


def data(n: int = 3000, width: int = 9, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, width)).astype(np.float32)
    X[:, 3] = rng.integers(0, 4, n)  # few distinct values: rows land exactly on thresholds
    X[rng.random(X.shape) < 0.15] = np.nan  # missing values follow each split's default direction
    logit = X[:, 0] * 2 - np.nan_to_num(X[:, 1]) + (X[:, 3] == 2) + rng.normal(scale=0.5, size=n)
    return X, (np.nan_to_num(logit) > 0).astype(int)


def booster(objective: str = "binary:logistic", **params) -> xgb.Booster:
    X, y = data()
    rounds = params.pop("rounds", 40)
    if objective.startswith("multi"):
        y = np.digitize(X[:, 0], [-0.5, 0.5])
        params["num_class"] = 3
    return xgb.train({"objective": objective, "nthread": 1, "seed": 1, **params},
                     xgb.DMatrix(X, y, missing=np.nan), num_boost_round=rounds)


@pytest.mark.parametrize("params", [
    {"max_depth": 1},                                          # stumps
    {"max_depth": 4, "eta": 0.3},
    {"max_depth": 8, "min_child_weight": 30, "rounds": 25},    # uneven trees: shallow leaves padded down
    {"max_depth": 0, "grow_policy": "lossguide", "max_leaves": 12},
    {"max_depth": 5, "base_score": 0.8, "scale_pos_weight": 3.0},
])
def test_same_probabilities_as_xgboost(params):
    b = booster(**params)
    forest = Forest.from_booster(b)
    assert forest is not None
    X, _ = data(2000, seed=7)
    X[:5] = np.nan  # all missing
    for rows in (X, X[:1], X[:63], X[:65]):  # one row, part of a block, a block and a bit
        got = forest.predict(rows)
        assert got.dtype == np.float64 and got.shape == (len(rows),)
        assert np.max(np.abs(got - b.inplace_predict(rows))) < 2e-6
    Xc = forest.check_matrix()
    assert np.isnan(Xc).any() and np.max(np.abs(forest.predict(Xc) - b.inplace_predict(Xc))) < 2e-6


@pytest.mark.parametrize("objective,params", [
    ("multi:softprob", {}),             # several outputs
    ("reg:squarederror", {}),           # not a probability
    ("binary:logistic", {"booster": "dart", "rate_drop": 0.1}),  # weighted trees
])
def test_unsupported_models_stay_on_xgboost(objective, params):
    assert Forest.from_booster(booster(objective, max_depth=3, **params)) is None


def test_categorical_splits_stay_on_xgboost():
    import pandas as pd

    X, y = data(600)
    df = pd.DataFrame(X[:, :3], columns=["a", "b", "c"]).assign(k=pd.Categorical(np.where(y == 1, "x", "y")))
    b = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                  xgb.DMatrix(df, y, enable_categorical=True), num_boost_round=5)
    assert Forest.from_booster(b) is None


def test_a_forest_that_disagrees_is_refused(monkeypatch):
    b = booster(max_depth=3)
    monkeypatch.setattr(Forest, "predict", lambda self, X: b.inplace_predict(X) + 1e-3)
    assert Forest.from_booster(b) is None
    assert Forest.from_booster(b, check=False) is not None


def test_wrong_width_is_an_error():
    forest = Forest.from_booster(booster(max_depth=2))
    with pytest.raises(ValueError, match="9 columns"):
        forest.predict(np.zeros((3, 8), np.float32))
