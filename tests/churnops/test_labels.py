"""The label join: duplicates, unknown ids, late labels, invalid values; the training-set policy."""

from __future__ import annotations

import pandas as pd
import pytest

from churnops.contract import load_contract
from churnops.labels import build_training_set, join_labels

C = load_contract("bank_churners")


def features(age=45, **over) -> dict:
    return {**C.example, "customer_age": age, **over}


def pred(rid, ts, age=45, source="http", **over) -> dict:
    return {"_id": f"{rid}@{ts}", "request_id": rid, "ts": ts, "source": source, "features": features(age, **over)}


def test_join_takes_the_latest_prediction_before_the_label_and_counts_every_problem():
    preds = [
        pred("a", 10, age=30),
        pred("a", 20, age=31),
        pred("a", 99, age=32),  # 99: after the label
        pred("b", 10, source="stream"),
        pred("c", 10),
        pred("d", 10, customer_age=500),
        pred("e", 10),
        pred("f", 10),
    ]
    fb = [
        {"request_id": "a", "outcome": 1, "ts": 50},
        {"request_id": "b", "outcome": 0, "ts": 11},
        {"request_id": "b", "outcome": 0, "ts": 12},  # duplicate
        {"request_id": "c", "outcome": 1, "ts": 11},
        {"request_id": "c", "outcome": 0, "ts": 12},  # conflicting
        {"request_id": "d", "outcome": 1, "ts": 11},  # invalid feature
        {"request_id": "e", "outcome": 7, "ts": 11},  # invalid outcome
        {"request_id": "zz", "outcome": 1, "ts": 11},  # unknown id
        {"request_id": "f", "outcome": 1, "ts": 10 + 3 * 86_400},
    ]  # late
    df, rep = join_labels(preds, fb, C)
    assert list(df["request_id"]) == ["b", "a", "f"]
    row_a = df.set_index("request_id").loc["a"]
    assert row_a["customer_age"] == 31 and row_a["churn"] == 1 and row_a["prediction_ts"] == 20
    assert (rep.labels, rep.joined, rep.duplicates, rep.conflicting) == (9, 3, 1, 1)
    assert (rep.invalid_features, rep.invalid_outcomes, rep.unknown_ids, rep.late) == (1, 1, 1, 1)
    assert rep.by_source == {"stream": 1, "http": 2}
    text = " | ".join(rep.problems)
    assert "zz: no prediction" in text and "customer_age" in text and "invalid outcome 7" in text


def test_label_before_any_prediction_of_its_id_is_unknown():
    df, rep = join_labels([pred("a", 100)], [{"request_id": "a", "outcome": 1, "ts": 50}], C)
    assert df.empty and rep.unknown_ids == 1


def test_missing_ordinal_logged_as_none_is_valid():
    p = pred("a", 1, education_level=None)
    df, rep = join_labels([p], [{"request_id": "a", "outcome": 0, "ts": 2}], C)
    assert rep.joined == 1 and df.loc[0, "education_level"] is None


def frame(n, start_ts=0.0, churn=0) -> pd.DataFrame:
    rows = [{**features(30 + i % 40), "churn": churn, "label_ts": start_ts + i} for i in range(n)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("policy", "window", "rows"), [("append", None, 100 + 8), ("sliding", 50, 50), ("replace", None, 8)]
)
def test_policy_and_held_out_newest_slice(policy, window, rows):
    parent = frame(100, churn=0).drop(columns="label_ts")
    new = frame(10, start_ts=1000, churn=1).sample(frac=1, random_state=1)  # order must not matter
    train, hold = build_training_set(parent, new, C, policy, window, holdout_fraction=0.2)
    assert len(train) == rows and len(hold) == 2
    assert sorted(hold["customer_age"]) == [38, 39]  # the two newest labels
    assert train["churn"].tail(8).tolist() == [1] * 8


def test_bad_policy_is_named():
    with pytest.raises(ValueError, match="expected append, sliding or replace"):
        build_training_set(None, frame(3), C, "merge")
    with pytest.raises(ValueError, match="LABEL_WINDOW_ROWS"):
        build_training_set(None, frame(3), C, "sliding")


# ---- a regression contract: the observed values are the target -------------------------------------

D = load_contract("diabetes")  # target `progression` in [0, 1000]


def dpred(rid, ts, bmi=32.1) -> dict:
    return {"_id": f"{rid}@{ts}", "request_id": rid, "ts": ts, "source": "http", "features": {**D.example, "bmi": bmi}}


def test_regression_labels_join_as_floats_and_every_problem_is_counted():
    preds = [dpred("a", 10, bmi=30.0), dpred("a", 20, bmi=31.0), dpred("b", 10), dpred("c", 10), dpred("d", 10)]
    preds += [dpred("e", 10), dpred("f", 10), dpred("g", 10)]
    fb = [
        {"request_id": "a", "outcome": 151.5, "ts": 50},
        {"request_id": "b", "outcome": 90, "ts": 11},
        {"request_id": "b", "outcome": 90.0, "ts": 12},  # duplicate (same value)
        {"request_id": "c", "outcome": 90.0, "ts": 11},
        {"request_id": "c", "outcome": 91.0, "ts": 12},  # conflicting values
        {"request_id": "d", "outcome": 1e6, "ts": 11},  # outside the target's range
        {"request_id": "e", "outcome": "high", "ts": 11},  # not a number
        {"request_id": "f", "outcome": None, "ts": 11},  # missing
        {"request_id": "g", "outcome": "0.5", "ts": 11},  # a number's text: kept as that number
        {"request_id": "zz", "outcome": 100.0, "ts": 11},  # unknown id
    ]
    df, rep = join_labels(preds, fb, D)
    assert list(df["request_id"]) == ["g", "b", "a"]  # by label time (b: its later duplicate)
    got = df.set_index("request_id")["progression"]
    assert got.to_dict() == {"g": 0.5, "b": 90.0, "a": 151.5}  # not rounded to classes
    assert df["progression"].dtype == "float64"
    assert df.set_index("request_id").loc["a", "bmi"] == 31.0  # the latest prediction before the label
    assert (rep.labels, rep.joined, rep.duplicates, rep.conflicting) == (10, 3, 1, 1)
    assert (rep.invalid_outcomes, rep.unknown_ids, rep.invalid_features) == (3, 1, 0)
    text = " | ".join(rep.problems)
    assert "d: value 1e+06 outside the target's range [0, 1000]" in text
    assert "e: invalid value 'high' (expected a finite number, the observed progression)" in text
    assert "f: invalid value None" in text and "c: conflicting outcomes [90.0, 91.0]" in text


def test_regression_training_set_from_labels_keeps_the_values():
    preds = [dpred(f"r{i}", 10 + i, bmi=20.0 + i) for i in range(10)]
    fb = [{"request_id": f"r{i}", "outcome": 100.25 + i, "ts": 100 + i} for i in range(10)]
    rows, rep = join_labels(preds, fb, D)
    parent = pd.DataFrame([{**D.example, "progression": 42.0}] * 3)
    train, hold = build_training_set(parent, rows, D, "append", holdout_fraction=0.2)
    assert list(hold["progression"]) == [108.25, 109.25]  # the newest labelled rows, held out
    assert list(train["progression"]) == [42.0] * 3 + [100.25 + i for i in range(8)]
    assert list(train.columns) == [*D.feature_names, "progression"]
