"""Hostile inputs on every JSON and query entry point: a 4xx naming the problem, never a 500,
and every answer valid JSON (issue 13, items 6 and 8)."""

from __future__ import annotations

import json

import pytest

from serving.inference import BadInput, parse_json
from tests.support.serving import example


def post(client, path, raw: bytes):
    return client.post(path, data=raw, content_type="application/json")


def strict_json(raw: bytes):
    """Parse as a strict JSON client does: NaN / Infinity tokens are an error."""

    def refuse(token):
        raise AssertionError(f"answer holds the non-JSON token {token}")

    return json.loads(raw, parse_constant=refuse)


def nested(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * depth + close * depth


DEEP = [nested(5000), nested(1000), nested(1020), b'{"a":' * 3000 + b"1" + b"}" * 3000]


@pytest.mark.parametrize("raw", DEEP, ids=["list5000", "list1000", "list1020", "object3000"])
def test_parse_json_refuses_deep_nesting_with_a_400(raw):
    try:
        parse_json(raw)
    except BadInput as e:
        assert e.status == 400 and "nest" in json.dumps(e.details), e.details
    # a depth the parser can hold is fine, as long as nothing else breaks on it below


@pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/feedback"])
@pytest.mark.parametrize(
    "raw",
    [
        nested(5000),
        nested(1000),
        b'{"records":' + nested(3000) + b"}",
        b'[{"Customer_Age":' + nested(990) + b"}]",
        b'{"request_id":' + nested(990) + b',"outcome":1}',
        b'{"features":' + nested(990, b'{"a":', b"}")[:-1] + b"1" + b"}" * 990 + b"}",
    ],
    ids=["list5000", "list1000", "records3000", "field990", "rid990", "features990"],
)
def test_deeply_nested_json_is_a_4xx_on_every_json_endpoint(app_client, path, raw):
    client, state = app_client
    r = post(client, path, raw)
    assert 400 <= r.status_code < 500, (r.status_code, r.data[:300])
    body = strict_json(r.data)
    assert body["error"] and body["details"], body
    ok = post(client, "/predict", json.dumps(example()).encode())
    assert ok.status_code == 200, "the API still serves"


@pytest.mark.parametrize("query", ["start=nan", "start=inf", "start=1e400", "end=-inf", "end=NaN", "start=-1e999"])
def test_logs_refuses_non_finite_times_naming_the_parameter(app_client, query):
    client, _ = app_client
    r = client.get(f"/logs?{query}")
    assert r.status_code == 422, (r.status_code, r.data[:200])
    body = strict_json(r.data)
    assert list(body["details"]) == [query.split("=")[0]], body
    assert "finite" in body["details"][query.split("=")[0]]


def test_every_json_answer_is_valid_json_even_with_non_finite_values(app_client):
    """An answer that would carry NaN/Infinity writes null instead (no invalid JSON tokens)."""
    from flask import jsonify

    from serving.inference import dumps

    client, state = app_client
    app = client.application
    with app.app_context():
        body = jsonify({"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": -float("inf")}}).get_data()
    assert strict_json(body) == {"a": None, "b": [1.5, None], "c": {"d": None}}
    assert strict_json(dumps({"a": float("nan"), "s": {1, 2} - {1, 2}})) == {"a": None, "s": "set()"}
