"""The compiled tree evaluator: the same probabilities as XGBoost, or no evaluator at all."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from churnops.speed.forest import Forest


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
    return xgb.train(
        {"objective": objective, "nthread": 1, "seed": 1, **params},
        xgb.DMatrix(X, y, missing=np.nan),
        num_boost_round=rounds,
    )


@pytest.mark.parametrize(
    "params",
    [
        {"max_depth": 1},  # stumps
        {"max_depth": 4, "eta": 0.3},
        {"max_depth": 8, "min_child_weight": 30, "rounds": 25},  # uneven trees: shallow leaves padded down
        {"max_depth": 0, "grow_policy": "lossguide", "max_leaves": 12},
        {"max_depth": 5, "base_score": 0.8, "scale_pos_weight": 3.0},
    ],
)
def test_same_probabilities_as_xgboost(params):
    b = booster(**params)
    forest = Forest.from_booster(b)
    assert forest is not None
    X, _ = data(2000, seed=7)
    X[:5] = np.nan  # all missing
    for rows in (X, X[:1], X[:63], X[:65]):  # one row, part of a block, a block and a bit
        got = forest.predict(rows)
        assert got.dtype == np.float64 and got.shape == (len(rows),)
        assert np.max(np.abs(got - b.inplace_predict(rows))) < 2e-7  # measured: bit for bit
        assert np.max(np.abs(forest.margin(rows) - b.inplace_predict(rows, predict_type="margin"))) < 1e-6
    import json

    Xc = forest.check_matrix(json.loads(bytes(b.save_raw("json")))["learner"]["gradient_booster"]["model"]["trees"])
    assert np.isnan(Xc).any() and forest.disagreement(b) is None


@pytest.mark.parametrize(
    "objective,params",
    [
        ("multi:softprob", {}),  # several outputs
        ("reg:squarederror", {}),  # not a probability
        ("binary:logistic", {"booster": "dart", "rate_drop": 0.1}),  # weighted trees
    ],
)
def test_unsupported_models_stay_on_xgboost(objective, params):
    assert Forest.from_booster(booster(objective, max_depth=3, **params)) is None


def test_categorical_splits_stay_on_xgboost():
    import pandas as pd

    X, y = data(600)
    df = pd.DataFrame(X[:, :3], columns=["a", "b", "c"]).assign(k=pd.Categorical(np.where(y == 1, "x", "y")))
    b = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(df, y, enable_categorical=True),
        num_boost_round=5,
    )
    assert Forest.from_booster(b) is None


def test_a_forest_that_disagrees_is_refused(monkeypatch):
    b = booster(max_depth=3)
    monkeypatch.setattr(Forest, "margin", lambda self, X: b.inplace_predict(X, predict_type="margin") + 1e-3)
    assert Forest.from_booster(b) is None
    assert Forest.from_booster(b, check=False) is not None


def test_check_catches_one_wrong_default_direction_or_threshold():
    """A layout bug at any single split (missing values sent the other way, or a threshold one
    float32 step off) must fail the check, however small the leaves below it."""
    import json

    b = booster(max_depth=6, rounds=30, eta=0.05)
    model = json.loads(bytes(b.save_raw("json")))
    rng = np.random.default_rng(3)
    trees = model["learner"]["gradient_booster"]["model"]["trees"]
    caught = tried = 0
    for _ in range(40):
        k = int(rng.integers(len(trees)))
        t = trees[k]
        parents, split = t["parents"], [i for i, c in enumerate(t["left_children"]) if c != -1]
        nid = int(rng.choice(split))
        path_feats, p = set(), parents[nid]
        while p != 2147483647 and p != -1:
            path_feats.add(t["split_indices"][p])
            p = parents[p]
        broken = json.loads(json.dumps(model))
        bt = broken["learner"]["gradient_booster"]["model"]["trees"][k]
        if t["split_indices"][nid] in path_feats or rng.random() < 0.5:  # nudge the threshold up
            bt["split_conditions"][nid] = float(
                np.nextafter(np.float32(bt["split_conditions"][nid]), np.float32(np.inf))
            )
        else:  # missing values the other way (reachable: the feature is not used above)
            bt["default_left"][nid] = 1 - bt["default_left"][nid]
        tried += 1
        caught += Forest.from_model_json(broken).disagreement(b) is not None
    assert caught == tried


def test_wrong_width_is_an_error():
    forest = Forest.from_booster(booster(max_depth=2))
    with pytest.raises(ValueError, match="9 columns"):
        forest.predict(np.zeros((3, 8), np.float32))
