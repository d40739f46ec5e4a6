"""Data tests: the real BankChurners file and the synthetic generator against the data contract.

What must hold of the data itself (schema, label balance, the unknown policy, ids, leakage), as
opposed to the code that cleans it (tests/churnops/test_contract_cleaning.py).
"""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churnops.cleaning import check_raw_frame, clean_frame
from churnops.contract import load_contract, validate_record
from churnops.synthetic import LEAK_1, LEAK_2, generate_customers
from tests.support.paths import real_file_only


@pytest.fixture(scope="module")
def contract():
    return load_contract("bank_churners")


@pytest.fixture(scope="module")
def raw_real(real_data_path):
    return pd.read_csv(real_data_path)


@real_file_only  # counts and rows of the real file
def test_real_file_cleans_and_passes(raw_real, contract):
    clean, report = check_raw_frame(raw_real, contract, "real")
    assert report.ok, str(report)
    assert list(clean.columns) == contract.feature_names + ["churn"]
    assert len(clean) == 10_127
    assert clean["churn"].sum() == 1627  # "Attrited Customer"
    # ids and leakage never survive cleaning
    assert not any(c.startswith("naive_bayes") or c == "clientnum" for c in clean.columns)


@real_file_only  # counts and rows of the real file
def test_unknown_policy_and_lowercase(raw_real, contract):
    clean = clean_frame(raw_real, contract)
    # nominal: "Unknown" kept as its own category
    assert (clean["marital_status"] == "unknown").sum() == 749
    # ordinal: "Unknown" becomes missing
    assert clean["education_level"].isna().sum() == 1519
    assert clean["income_category"].isna().sum() == 1112
    assert set(clean["gender"].unique()) == {"f", "m"}
    assert set(clean["card_category"].unique()) == {"blue", "silver", "gold", "platinum"}


def test_synthetic_matches_schema_and_passes(contract):
    raw = generate_customers(3000, seed=7)
    assert LEAK_1 in raw.columns and LEAK_2 in raw.columns and "CLIENTNUM" in raw.columns
    clean, report = check_raw_frame(raw, contract, "synthetic")
    assert report.ok, str(report)
    assert 0.12 < clean["churn"].mean() < 0.20
    # same seed, same frame; other seed, other frame
    pd.testing.assert_frame_equal(raw, generate_customers(3000, seed=7))
    assert not raw.equals(generate_customers(3000, seed=8))


def test_synthetic_churn_mechanism_is_plausible(contract):
    clean = clean_frame(generate_customers(8000, seed=1), contract)
    churned, stayed = clean[clean.churn == 1], clean[clean.churn == 0]
    assert churned["total_trans_ct"].mean() < stayed["total_trans_ct"].mean() - 5
    assert churned["contacts_count_12_mon"].mean() > stayed["contacts_count_12_mon"].mean()


def test_real_ids_are_unique_and_leakage_columns_really_leak(raw_real, contract):
    assert raw_real["CLIENTNUM"].is_unique
    churn = (raw_real[contract.target.source] == contract.target.positive).astype(int)
    leaks = [c for c in raw_real.columns if contract.is_dropped(c) and c.startswith("Naive_Bayes")]
    assert len(leaks) == 2
    for c in leaks:  # someone else's model output: near-perfect, which is why the contract drops them
        assert max(roc_auc_score(churn, raw_real[c]), roc_auc_score(churn, -raw_real[c])) > 0.99


def test_contract_example_is_a_valid_record(contract):
    result = validate_record(dict(contract.example), contract)
    assert result.ok, result.errors
