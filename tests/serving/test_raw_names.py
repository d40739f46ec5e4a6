"""Rows pasted from the raw data file, with its own column names, are accepted on every path.

The first rows of ../shared/data/bank_churners.csv are read as the file has them (`Customer_Age`,
`Gender`, ..., `CLIENTNUM`, `Attrition_Flag`, the leakage columns); the expected clean records
are written out by hand here (the contract's example is the file's first row).
"""

from __future__ import annotations

import csv
import io
import json

import pandas as pd

from tests.support.paths import REAL_DATA, real_file_only
from tests.support.serving import example, local_model_set, post

DATA = REAL_DATA
FEATURE_COLUMNS = [
    "Customer_Age", "Gender", "Dependent_count", "Education_Level", "Marital_Status", "Income_Category",
    "Card_Category", "Months_on_book", "Total_Relationship_Count", "Months_Inactive_12_mon",
    "Contacts_Count_12_mon", "Credit_Limit", "Total_Revolving_Bal", "Avg_Open_To_Buy", "Total_Amt_Chng_Q4_Q1",
    "Total_Trans_Amt", "Total_Trans_Ct", "Total_Ct_Chng_Q4_Q1", "Avg_Utilization_Ratio",
]  # fmt: skip
# the clean names, written out (not derived by the code under test)
CLEAN_NAMES = [
    "customer_age", "gender", "dependent_count", "education_level", "marital_status", "income_category",
    "card_category", "months_on_book", "total_relationship_count", "months_inactive_12_mon",
    "contacts_count_12_mon", "credit_limit", "total_revolving_bal", "avg_open_to_buy", "total_amt_chng_q4_q1",
    "total_trans_amt", "total_trans_ct", "total_ct_chng_q4_q1", "avg_utilization_ratio",
]  # fmt: skip
RENAMED = dict(zip(FEATURE_COLUMNS, CLEAN_NAMES))
# the file's second row, cleaned by hand
SECOND_CLEAN = {
    "customer_age": 49, "gender": "f", "dependent_count": 5, "education_level": "graduate",
    "marital_status": "single", "income_category": "less than $40k", "card_category": "blue",
    "months_on_book": 44, "total_relationship_count": 6, "months_inactive_12_mon": 1,
    "contacts_count_12_mon": 2, "credit_limit": 8256, "total_revolving_bal": 864, "avg_open_to_buy": 7392,
    "total_amt_chng_q4_q1": 1.541, "total_trans_amt": 1291, "total_trans_ct": 33, "total_ct_chng_q4_q1": 3.714,
    "avg_utilization_ratio": 0.105,
}  # fmt: skip

pytestmark = real_file_only  # hand-copied rows of the real file


def raw_rows(n: int) -> list[dict]:
    """The file's first `n` rows as JSON would carry them (numbers as numbers), every column kept."""
    df = pd.read_csv(DATA, nrows=n)
    return json.loads(df.to_json(orient="records"))


def raw_text_rows(n: int) -> list[dict]:
    """The same rows with every value a string (a row pasted from the CSV text)."""
    with DATA.open(newline="") as f:
        return [row for _, row in zip(range(n), csv.DictReader(f))]


def strip_volatile(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("request_id", "latency_ms")}


def test_the_first_rows_are_what_the_expected_values_say():
    first, second = raw_rows(2)
    assert [first[c] for c in FEATURE_COLUMNS][:4] == [45, "M", 3, "High School"]
    assert first["CLIENTNUM"] == 768805383 and example()["customer_age"] == 45
    assert second["Customer_Age"] == 49 and second["Income_Category"] == "Less than $40K"


def test_raw_row_on_predict_is_renamed_and_answers_like_the_clean_row(app_client):
    client, _ = app_client
    raw = raw_rows(1)[0]
    r = post(client, "/predict", raw)
    assert r.status_code == 200, r.json
    assert r.json["renamed"] == RENAMED
    assert sorted(r.json["ignored_fields"]) == sorted(k for k in raw if k not in RENAMED)
    assert "CLIENTNUM" in r.json["ignored_fields"] and "Attrition_Flag" in r.json["ignored_fields"]
    clean = post(client, "/predict", example()).json
    assert "renamed" not in clean
    assert r.json["probability"] == clean["probability"]
    # pasted as CSV text (every value a string), in an envelope: the same answer
    text = post(client, "/predict", {"request_id": "csv-1", "features": raw_text_rows(1)[0]})
    assert text.status_code == 200, text.json
    assert text.json["request_id"] == "csv-1" and text.json["renamed"] == RENAMED
    assert text.json["probability"] == clean["probability"]


def test_raw_row_answers_the_same_through_the_fast_path_and_the_flask_view(app_client):
    """A chunked upload skips the WSGI fast path: the Flask view gives the same body."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    client, _ = app_client
    body = {"request_id": "raw-1", "features": raw_rows(1)[0]}
    fast = post(client, "/predict", body)
    env = EnvironBuilder(
        path="/predict",
        method="POST",
        content_type="application/json",
        input_stream=io.BytesIO(json.dumps(body).encode()),
        headers={"Transfer-Encoding": "chunked"},
    ).get_environ()
    del env["CONTENT_LENGTH"]
    env["wsgi.input_terminated"] = True
    out, status, _ = run_wsgi_app(client.application, env, buffered=True)
    view = json.loads(b"".join(out))
    assert status.startswith("200") and fast.status_code == 200
    assert strip_volatile(view) == strip_volatile(fast.json)


def test_raw_and_clean_name_of_one_feature_is_a_422_naming_the_field(app_client):
    client, _ = app_client
    r = post(client, "/predict", example(Customer_Age=45))
    assert r.status_code == 422
    assert set(r.json["details"]) == {"Customer_Age"}
    assert "customer_age" in r.json["details"]["Customer_Age"]
    bad = raw_rows(1)[0] | {"Gender": "X"}
    r = post(client, "/predict", bad)
    assert r.status_code == 422 and set(r.json["details"]) == {"Gender"}
    assert "unknown category 'X'" in r.json["details"]["Gender"]
    r = post(client, "/predict/batch", [example(), example(Gender="m")])
    assert r.status_code == 422 and set(r.json["details"]) == {"1.Gender"}


def test_raw_rows_on_predict_batch(app_client):
    client, _ = app_client
    raw = raw_rows(2)
    r = post(client, "/predict/batch", raw)
    assert r.status_code == 200, r.json
    assert r.json["count"] == 2 and r.json["renamed"] == RENAMED
    clean = post(client, "/predict/batch", [example(), SECOND_CLEAN]).json
    assert "renamed" not in clean
    assert [p["probability"] for p in r.json["predictions"]] == [p["probability"] for p in clean["predictions"]]
    # a batch mixing a raw row and a clean row: each row mapped on its own
    mixed = post(client, "/predict/batch", {"records": [raw[1], example()]})
    assert mixed.status_code == 200, mixed.json
    assert [p["probability"] for p in mixed.json["predictions"]] == [
        clean["predictions"][1]["probability"],
        clean["predictions"][0]["probability"],
    ]


def test_raw_rows_answer_the_same_with_fast_paths_off(serving_settings, bundles, app_client):
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager

    client, _ = app_client
    s = serving_settings.model_copy(update={"fast_paths": "off", "state_dir": serving_settings.state_dir / "plain"})
    store = SQLiteStore(s.state_dir / "predictions.db")
    mm = ModelManager(s)
    mm.current = local_model_set(bundles)
    plain = create_app(s, store=store, models=mm, start_background=False)
    try:
        pc = plain.test_client()
        raw = raw_rows(3)
        for path, body in (("/predict", {"request_id": "x", "features": raw[0]}), ("/predict/batch", raw)):
            a, b = post(client, path, body), post(pc, path, body)
            assert a.status_code == b.status_code == 200
            a, b = strip_volatile(a.json), strip_volatile(b.json)
            if path == "/predict/batch":
                for x in (a, b):
                    x["predictions"] = [strip_volatile(p) for p in x["predictions"]]
            assert a == b
    finally:
        plain.extensions["churn"].plog.close()
        store.close()


def test_raw_row_on_the_stream(make_stream_settings, bundles):
    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore
    from tests.support.streams import make_consumer, put, read_stream

    s = make_stream_settings(stream_shards=1)
    kin = client("kinesis", s)
    raw = raw_rows(1)[0]
    put(
        kin,
        s,
        [
            json.dumps({"request_id": "raw", "features": raw}).encode(),
            json.dumps({"request_id": "clean", "features": example()}).encode(),
            json.dumps({"request_id": "both", "features": example(Customer_Age=45)}).encode(),
        ],
    )
    c = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    c.run(max_idle_polls=2)
    results = {r["request_id"]: r for r in read_stream(kin, s.output_stream)}
    assert set(results) == {"raw", "clean"}
    assert results["raw"]["renamed"] == RENAMED and "renamed" not in results["clean"]
    assert results["raw"]["probability"] == results["clean"]["probability"]
    dlq = read_stream(kin, s.dlq_stream)
    assert len(dlq) == 1 and set(dlq[0]["details"]) == {"Customer_Age"}
    c.plog.close()
