"""The column-wise batch path agrees with the row-by-row path on every input, valid or not."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from churnops.contract import load_contract
from churnops.features import FeatureEncoder
from churnops.speed.columnar import ColumnarValidator as _ColumnarValidator
from churnops.speed.records import FastValidator as _FastValidator
from serving.columnar import from_rows
from serving.inference import BadInput, check_row
from tests.support.serving import example, post

CONTRACT = load_contract("bank_churners")


def ColumnarValidator(contract, unknown="reject"):
    return _ColumnarValidator(contract.validator(), unknown)


def FastValidator(contract, unknown="reject"):
    return _FastValidator(contract.validator(), unknown)


# (field, value) edits: valid variants, then ones the row path must judge
VALID_EDITS = [
    ("gender", "F"),
    ("gender", " m "),
    ("education_level", "Unknown"),
    ("marital_status", "Unknown"),
    ("income_category", "unknown"),
    ("customer_age", 18),
    ("customer_age", 100.0),
    ("avg_open_to_buy", -5.5),
    ("extra_field", 1),
    ("card_category", "Gold"),
]
BAD_EDITS = [
    ("customer_age", "45"),
    ("customer_age", True),
    ("customer_age", None),
    ("customer_age", 101),
    ("customer_age", 10**400),
    ("gender", 1),
    ("gender", "x"),
    ("card_category", ["blue"]),
    ("education_level", None),
    ("request_id", ""),
    ("request_id", 7),
    ("features", [1]),
]


def random_batch(rng: random.Random, n: int, edits: list) -> list:
    out = []
    for i in range(n):
        rec = example(customer_age=rng.randint(18, 100), credit_limit=rng.uniform(0, 30000))
        if rng.random() < 0.3:
            k, v = rng.choice(edits)
            if k == "request_id":
                out.append({"request_id": v, "features": rec})
                continue
            if k == "features":
                out.append({"features": v})
                continue
            rec[k] = v
        if rng.random() < 0.2:
            out.append({"request_id": f"r{i}", "features": rec})
        elif rng.random() < 0.1:
            out.append({**rec, "request_id": f"r{i}"})
        else:
            out.append(rec)
    return out


def row_path(objs, unknown):
    v = FastValidator(CONTRACT, unknown)
    return [check_row(o, CONTRACT, unknown, prefix=i, validator=v) for i, o in enumerate(objs)]


def row_accepts(obj, unknown) -> bool:
    try:
        row_path([obj], unknown)
    except BadInput:
        return False
    return True


def assert_columns_match_rows(cv: _ColumnarValidator, got, objs: list, unknown: str) -> None:
    """The columns `got` (from `objs`) hold exactly what the row path makes of the same objects."""
    rows = row_path(objs, unknown)
    want = from_rows(rows, cv.compiled)
    assert got.n == len(objs)
    for name in CONTRACT.features:
        a, b = got.columns[name], want.columns[name]
        if isinstance(a, np.ndarray):
            assert a.dtype == np.float64 and np.array_equal(a, b)
        else:
            assert a == b
    assert got.ignored == want.ignored
    supplied = [r.request_id for r, o in zip(rows, objs) if "request_id" in o]
    assert [rid for rid, o in zip(got.request_ids, objs) if "request_id" in o] == supplied
    assert all(len(r) == 32 for r, o in zip(got.request_ids, objs) if "request_id" not in o)
    enc = FeatureEncoder.from_contract(CONTRACT)
    np.testing.assert_array_equal(
        enc.transform_columns(got.columns, got.n), enc.transform_records([r.values for r in rows])
    )


@pytest.mark.parametrize("unknown", ["reject", "unknown"])
@pytest.mark.parametrize("seed", range(40))
def test_columns_equal_rows_or_defer(seed, unknown):
    rng = random.Random(seed)
    objs = random_batch(rng, rng.randint(1, 60), VALID_EDITS + (BAD_EDITS if seed % 2 else []))
    cv = ColumnarValidator(CONTRACT, unknown)
    got = cv(objs)
    accepted = [o for o in objs if row_accepts(o, unknown)]
    if len(accepted) < len(objs):
        assert got is None  # whatever the row path rejects, the column path never accepts
    elif got is None:  # deferring to the row path is allowed (string numbers, integer ids), not on plain input
        assert seed % 2
    else:
        assert_columns_match_rows(cv, got, objs, unknown)
    # every case compares values: the rows both paths accept, as one batch
    both = [o for o in accepted if cv([o]) is not None]
    assert len(both) >= len(objs) // 2, "the random batch should be mostly valid"
    if both:
        sub = cv(both)
        assert sub is not None
        assert_columns_match_rows(cv, sub, both, unknown)


@pytest.mark.parametrize("seed", range(40))
def test_decoded_body_equals_columns_or_defers(seed):
    """`decode` (msgspec, straight from the bytes) accepts a subset of what the dict path accepts, with equal values."""
    rng = random.Random(seed)
    objs = random_batch(rng, rng.randint(1, 60), VALID_EDITS + (BAD_EDITS if seed % 2 else []))
    cv = ColumnarValidator(CONTRACT)
    got = cv.decode(json.dumps(objs if seed % 3 else {"records": objs}).encode())
    if not all(row_accepts(o, "reject") for o in objs):
        assert got is None
    # values are compared in every case: on the whole batch when decoded, and on the rows it decodes one by one
    plain = [o for o in objs if row_accepts(o, "reject") and cv.decode(json.dumps([o]).encode()) is not None]
    assert len(plain) >= len(objs) // 3, "the random batch should be mostly exact contract rows"
    for subset in ([objs] if got is not None else []) + ([plain] if plain else []):
        dec = cv.decode(json.dumps(subset).encode())
        assert dec is not None, "rows the decoder takes one by one, it takes together"
        want = cv(subset)
        assert dec.n == want.n == len(subset) and dec.ignored == want.ignored == {}
        for name in CONTRACT.features:
            a, b = dec.columns[name], want.columns[name]
            assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
        assert [r for r, o in zip(dec.request_ids, subset) if "request_id" in o] == [
            r for r, o in zip(want.request_ids, subset) if "request_id" in o
        ]


def test_decoder_defers_on_what_it_cannot_judge_alone():
    cv = ColumnarValidator(CONTRACT)
    row = json.dumps(example())[1:-1]
    assert cv.decode(b"[{%s}]" % row.encode()) is not None
    assert cv.decode(b'[{%s, "customer_age": 200}]' % row.encode()) is None, "a repeated key: the last one counts"
    assert cv.decode(b'[{%s, "customer_age": NaN}]' % row.encode()) is None
    assert cv.decode(b'[{%s, "request_id": " "}]' % row.encode()) is None
    assert cv.decode(b"[]") is None and cv.decode(b"") is None and cv.decode(b'{"rows": []}') is None


def test_plain_valid_batch_takes_the_column_path():
    objs = [example(customer_age=20 + i % 50, gender="F", extra=i) for i in range(100)]
    got = ColumnarValidator(CONTRACT)(objs)
    assert got is not None and got.columns["gender"] == ["f"] * 100
    assert got.columns["customer_age"].tolist() == [20.0 + i % 50 for i in range(100)]
    assert got.ignored == {i: ["extra"] for i in range(100)}


def test_batch_log_records_match_single_predictions(app_client):
    """A batch row is logged exactly as the same row sent alone (bar ts, latency and the batch flag)."""
    client, state = app_client
    feats = example(education_level="Unknown", gender="F")
    single = post(client, "/predict", {"request_id": "one", "features": feats}).json
    batch = post(client, "/predict/batch", [{"request_id": "many", "features": feats}]).json
    assert batch["predictions"][0]["probability"] == single["probability"]
    state.plog.flush()
    recs = {r["request_id"]: r for r in state.store.find_predictions()}
    a, b = recs["one"], recs["many"]
    assert b.pop("batch") is True
    for k in ("_id", "request_id", "ts", "latency_ms"):
        a.pop(k), b.pop(k)
    assert a == b and a["features"]["education_level"] is None and a["features"]["gender"] == "f"


def test_large_matrices_go_to_the_native_booster_with_the_same_answers(bundles):
    """ONNX answers small inputs, XGBoost's own predictor large batches; they agree to 1e-6."""
    from churnops.bundle import Bundle
    from churnops.cleaning import clean_frame
    from churnops.synthetic import generate_customers

    enc = FeatureEncoder.from_contract(CONTRACT)
    X = enc.transform_frame(clean_frame(generate_customers(300, seed=5), CONTRACT))
    onnx_only = Bundle.load(bundles["a"], native_min_rows=0)
    mixed = Bundle.load(bundles["a"], native_min_rows=64)
    assert (onnx_only.runtime, onnx_only.batch_runtime, onnx_only.booster) == ("onnx", "onnx", None)
    assert (mixed.runtime, mixed.batch_runtime) == ("onnx", "xgboost")
    small, large = mixed.predict_matrix(X[:63]), mixed.predict_matrix(X)
    np.testing.assert_array_equal(small, onnx_only.predict_matrix(X[:63]))  # below the cut: ONNX itself
    assert np.max(np.abs(large - onnx_only.predict_matrix(X))) < 1e-6
    assert large.dtype == np.float64 and large.shape == (300,)
    compiled = Bundle.load(bundles["a"], native_min_rows=64, compiled_trees=True)
    assert (compiled.runtime, compiled.batch_runtime) == ("onnx", "compiled-trees")
    np.testing.assert_array_equal(compiled.predict_matrix(X[:63]), onnx_only.predict_matrix(X[:63]))
    assert np.max(np.abs(compiled.predict_matrix(X) - large)) < 1e-6
    native = Bundle.load(bundles["native"], native_min_rows=64)  # no ONNX file: native for everything
    assert (native.runtime, native.batch_runtime, native.native_min_rows) == ("xgboost", "xgboost", 0)
    assert native.predict_matrix(X[:1]).shape == (1,)
