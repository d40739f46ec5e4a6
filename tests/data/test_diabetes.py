"""Data tests: scikit-learn's bundled diabetes data against the `diabetes` regression contract,
and the CSV that `python -m churnops.datasets_bundled diabetes` writes for DATA=."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnops.cleaning import check_raw_frame
from churnops.contract import load_contract, validate_record
from churnops.datasets_bundled import diabetes, main


@pytest.fixture(scope="module")
def contract():
    return load_contract("diabetes")


def test_bundled_diabetes_passes_its_contract(contract):
    clean, report = check_raw_frame(diabetes(), contract, "sklearn diabetes")
    assert report.ok, str(report)
    assert not report.warnings  # every raw column is in the contract
    assert list(clean.columns) == contract.feature_names + ["progression"]
    assert len(clean) == 442
    # the published description: progression 25..346, two sexes coded 1/2, unscaled ages
    assert (clean["progression"].min(), clean["progression"].max()) == (25.0, 346.0)
    assert set(clean["sex"]) == {1.0, 2.0}
    assert 19 <= clean["age"].min() and clean["age"].max() <= 79
    assert clean.notna().all().all()


def test_features_carry_signal_for_the_target(contract):
    """bmi and s5 (log triglycerides) are the data set's best-known predictors: both correlate
    clearly with progression, so a model has something real to learn."""
    clean, _ = check_raw_frame(diabetes(), contract, "sklearn diabetes")
    corr = clean[contract.feature_names].corrwith(clean["progression"])
    assert corr["bmi"] > 0.5 and corr["s5"] > 0.5


def test_materialised_csv_round_trips(tmp_path, contract, capsys):
    out = tmp_path / "d" / "diabetes.csv"
    assert main(["diabetes", str(out)]) == 0
    assert "wrote 442 rows" in capsys.readouterr().out
    raw = pd.read_csv(out)
    clean, report = check_raw_frame(raw, contract, str(out))
    assert report.ok, str(report)
    assert np.allclose(clean["progression"].to_numpy(), diabetes()["target"].to_numpy())
    assert main(["iris", str(out)]) == 2  # only bundled names


def test_contract_example_is_a_valid_record(contract):
    res = validate_record(contract.example, contract)
    assert res.ok, res.errors
    assert validate_record({**contract.example, "sex": 3}, contract).errors == {"sex": "value 3 above maximum 2"}
