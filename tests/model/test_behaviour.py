"""Model-behaviour tests on the model the real flow trained on the real data (Made With ML's kinds).

- invariance: attributes that should not drive churn (gender, marital status) barely move the score;
- direction: fewer transactions and more inactive months raise the churn risk;
- known cases: a clearly engaged customer and a clearly disengaged one get the expected side.

The thresholds below are behaviour the business expects, not values this model produced: a model
that learned something else (say, to key on gender) fails them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnops.cleaning import clean_frame
from churnops.contract import load_contract


@pytest.fixture(scope="module")
def bundle(trained, stack_env, tmp_path_factory):
    import mlflow

    from churnops.bundle import Bundle

    mlflow.set_tracking_uri(stack_env.mlflow_tracking_uri)
    path = mlflow.artifacts.download_artifacts(
        f"runs:/{trained['run_id']}/model", dst_path=str(tmp_path_factory.mktemp("b"))
    )
    return Bundle.load(f"{path}/artifacts/bundle", prefer_onnx=True)


@pytest.fixture(scope="module")
def customers(real_data_path) -> pd.DataFrame:
    """600 real customers, clean, without the target."""
    contract = load_contract("bank_churners")
    frame = clean_frame(pd.read_csv(real_data_path), contract)
    return frame.drop(columns=[contract.target.name]).sample(600, random_state=7).reset_index(drop=True)


def _scores(bundle, frame: pd.DataFrame) -> np.ndarray:
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict(orient="records")
    ]
    return np.asarray(bundle.predict_records(records), dtype=float)


@pytest.mark.parametrize(
    ("column", "values"), [("gender", ["f", "m"]), ("marital_status", ["married", "single", "divorced"])]
)
def test_invariance_protected_like_attributes_barely_move_the_score(bundle, customers, column, values):
    base = _scores(bundle, customers)
    for v in values:
        moved = np.abs(_scores(bundle, customers.assign(**{column: v})) - base)
        assert np.median(moved) < 0.02, f"{column}={v}: median |Δp| {np.median(moved):.3f}"
        assert np.quantile(moved, 0.9) < 0.10, f"{column}={v}: 90th percentile |Δp| {np.quantile(moved, 0.9):.3f}"


def test_direction_fewer_transactions_raise_churn_risk(bundle, customers):
    base = _scores(bundle, customers)
    fewer = customers.assign(total_trans_ct=(customers["total_trans_ct"] * 0.6).round().clip(lower=10))
    delta = _scores(bundle, fewer) - base
    assert delta.mean() > 0.02
    assert (delta > 1e-3).sum() > 3 * (delta < -1e-3).sum()


def test_direction_more_inactive_months_raise_churn_risk(bundle, customers):
    base = _scores(bundle, customers)
    idle = customers.assign(months_inactive_12_mon=(customers["months_inactive_12_mon"] + 2).clip(upper=6))
    delta = _scores(bundle, idle) - base
    assert delta.mean() > 0
    assert (delta > 1e-3).sum() > (delta < -1e-3).sum()


ENGAGED = {
    "customer_age": 45,
    "gender": "f",
    "dependent_count": 2,
    "education_level": "graduate",
    "marital_status": "married",
    "income_category": "$60k - $80k",
    "card_category": "blue",
    "months_on_book": 36,
    "total_relationship_count": 5,
    "months_inactive_12_mon": 1,
    "contacts_count_12_mon": 1,
    "credit_limit": 9000.0,
    "total_revolving_bal": 1500,
    "avg_open_to_buy": 7500.0,
    "total_amt_chng_q4_q1": 0.8,
    "total_trans_amt": 14000,
    "total_trans_ct": 110,
    "total_ct_chng_q4_q1": 0.8,
    "avg_utilization_ratio": 0.167,
}
DISENGAGED = {
    **ENGAGED,
    "total_relationship_count": 1,
    "months_inactive_12_mon": 4,
    "contacts_count_12_mon": 5,
    "total_revolving_bal": 0,
    "avg_open_to_buy": 9000.0,
    "avg_utilization_ratio": 0.0,
    "total_amt_chng_q4_q1": 0.4,
    "total_trans_amt": 900,
    "total_trans_ct": 20,
    "total_ct_chng_q4_q1": 0.3,
}


def test_known_cases(bundle):
    engaged, disengaged = bundle.predict_records([ENGAGED, DISENGAGED])
    assert engaged < 0.1
    assert disengaged > 0.5
    assert disengaged > bundle.threshold > engaged
