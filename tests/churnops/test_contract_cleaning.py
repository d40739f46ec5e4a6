"""Cleaning and the data contract: unit tests on the real file and on hand-made frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnops.cleaning import check_raw_frame, clean_frame
from churnops.contract import ContractViolation, load_contract, validate_record
from churnops.validator import snake_case
from tests.support.paths import real_file_only


@pytest.fixture(scope="module")
def contract():
    return load_contract("bank_churners")


@pytest.fixture(scope="module")
def raw_real(real_data_path):
    return pd.read_csv(real_data_path)


def test_snake_case():
    assert snake_case("Months_Inactive_12_mon") == "months_inactive_12_mon"
    assert snake_case("Total_Ct_Chng_Q4_Q1") == "total_ct_chng_q4_q1"
    assert snake_case("CustomerAge") == "customer_age"
    assert snake_case(" Card Category ") == "card_category"


def test_contract_reports_every_failure(raw_real, contract):
    bad = raw_real.head(300).copy()
    bad.loc[0, "Customer_Age"] = 250  # out of range
    bad.loc[1, "Card_Category"] = "Titanium"  # unknown category
    bad["Credit_Limit"] = bad["Credit_Limit"].astype(object)
    bad.loc[2, "Credit_Limit"] = "lots"  # not numeric
    bad = bad.drop(columns=["Total_Trans_Ct"])  # missing column
    _, report = check_raw_frame(bad, contract, "bad.csv")
    text = str(report)
    assert not report.ok
    assert "customer_age" in text and "above max" in text
    assert "card_category" in text and "titanium" in text
    assert "credit_limit" in text and "non-numeric" in text and "lots" in text
    assert "total_trans_ct: column missing" in text
    assert len(report.failures) >= 4
    assert str(ContractViolation(report)).startswith("data contract check of bad.csv")


def test_contract_min_rows_and_labels(raw_real, contract):
    small = raw_real.head(50).copy()
    small.loc[0, "Attrition_Flag"] = "Maybe"
    _, report = check_raw_frame(small, contract, "small")
    text = str(report)
    assert "rows: 50 < minimum 200" in text
    assert "label outside" in text


def test_validate_record_accepts_and_reports(contract, raw_real):
    row = clean_frame(raw_real.head(1), contract)[contract.feature_names].iloc[0].to_dict()
    row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
    row["education_level"] = "Graduate"
    row["income_category"] = "Unknown"
    ok = validate_record(row | {"extra": 1}, contract)
    assert ok.ok and ok.ignored == ["extra"]
    assert ok.values["education_level"] == "graduate" and ok.values["income_category"] is None

    bad = dict(row)
    bad.pop("gender")
    bad["customer_age"] = "old"
    bad["credit_limit"] = float("inf")
    bad["card_category"] = "titanium"
    bad["total_trans_ct"] = -3
    r = validate_record(bad, contract)
    assert set(r.errors) == {"gender", "customer_age", "credit_limit", "card_category", "total_trans_ct"}
    assert "missing" in r.errors["gender"] and "below minimum" in r.errors["total_trans_ct"]
    mapped = validate_record(dict(row, card_category="titanium"), contract, unknown_category="unknown")
    assert mapped.ok and mapped.values["card_category"] is None


def test_other_dataset_contract_loads(tmp_path):
    p = tmp_path / "toy.yaml"
    p.write_text(
        "name: toy\ntarget: {source: Outcome, name: y, positive: 'yes', labels: ['yes', 'no']}\n"
        "id_columns: [Id]\nmin_rows: 10\nfeatures:\n  x1: {kind: numeric}\n  color: {kind: categorical, categories: [Red, Blue]}\n"
    )
    c = load_contract(str(p))
    assert c.feature_names == ["x1", "color"] and c.features["color"].categories == ["red", "blue"]
    raw = pd.DataFrame(
        {"Id": range(20), "X1": np.arange(20.0), "Color": ["Red", "Blue"] * 10, "Outcome": ["yes", "no"] * 10}
    )
    clean, report = check_raw_frame(raw, c, "toy")
    assert report.ok, str(report)
    assert list(clean.columns) == ["x1", "color", "y"] and clean["y"].sum() == 10


def test_bad_contract_file_names_the_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\nfeatures: {a: {kind: banana}}\n")
    with pytest.raises(ValueError, match="broken.yaml"):
        load_contract(str(p))
    with pytest.raises(FileNotFoundError, match="nope"):
        load_contract("nope")


@real_file_only  # counts and rows of the real file
def test_validate_record_maps_the_raw_files_names(contract, raw_real):
    """The file's first row, with its own column names, validates to the contract's example."""
    raw = raw_real.head(1).to_dict(orient="records")[0]
    r = validate_record(raw, contract)
    assert r.ok, r.errors
    assert r.renamed["Customer_Age"] == "customer_age" and r.renamed["Months_on_book"] == "months_on_book"
    assert len(r.renamed) == 19
    assert sorted(r.ignored)[:2] == ["Attrition_Flag", "CLIENTNUM"] and len(r.ignored) == 4
    want = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in contract.example.items()}
    assert r.values == want
    both = validate_record(dict(contract.example, Gender="F"), contract)
    assert both.errors == {"Gender": "the raw name of gender, also sent as 'gender': send one of them"}
    two_raw = validate_record(dict(raw, CustomerAge=45), contract)
    assert set(two_raw.errors) == {"CustomerAge"}
    bad = validate_record(dict(raw, Customer_Age=300), contract)
    assert bad.errors == {"Customer_Age": "value 300 above maximum 100"}


def test_one_rule_reaches_every_check(contract):
    """A range changed in the contract changes the training check, the record validator, its fast
    twin and the column/msgspec batch path alike: they all read the one compiled description."""
    import json

    from churnops.cleaning import check_clean_frame
    from churnops.contract import DatasetContract
    from churnops.speed.columnar import ColumnarValidator
    from churnops.speed.records import FastValidator

    d = contract.model_dump()
    d["features"]["customer_age"]["max"] = 60
    narrow = DatasetContract.model_validate(d)
    rec = dict(contract.example, customer_age=70)
    body = json.dumps([rec]).encode()
    frame = pd.DataFrame([rec] * 250).assign(churn=[0.0, 1.0] * 125)
    for c, accepted in ((contract, True), (narrow, False)):
        compiled = c.validator()
        assert compiled is c.validator()  # compiled once per contract
        assert validate_record(rec, c).ok is accepted
        assert FastValidator(compiled)(rec).ok is accepted
        assert (ColumnarValidator(compiled)([rec]) is not None) is accepted
        assert (ColumnarValidator(compiled).decode(body) is not None) is accepted
        assert check_clean_frame(frame, c).ok is accepted
    assert validate_record(rec, narrow).errors == {"customer_age": "value 70 above maximum 60"}
    assert "customer_age: 250 value(s) above max 60" in str(check_clean_frame(frame, narrow))
