"""The HTTP API and the stream consumer answer a record through one function (serving.inference.response_body)."""

from __future__ import annotations

import json

import pytest

from tests.support.serving import example, local_model_set
from tests.support.streams import make_consumer, one_shard, put, read_stream

pytestmark = pytest.mark.integration

# the fields only one transport has: HTTP times the request; a stream result says where its record was
HTTP_ONLY = {"latency_ms"}
STREAM_ONLY = {"sequence_number", "shard_id", "ts"}


def test_http_and_stream_answer_the_same_record_field_by_field(stream_settings, bundles):  # noqa: F811
    """Records with an ignored field, raw column names and a canary split (both routes taken): the
    POST /predict answer and the `results` entry are equal in every field but the transport's own."""
    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager

    s = one_shard(stream_settings, canary_fraction=0.5)
    raw = dict(example())
    raw["Customer_Age"] = raw.pop("customer_age")  # a raw file column name: answered with `renamed`
    records = [
        {"request_id": f"parity-{i}", "features": example(customer_age=30 + i) | ({"extra": 1} if i % 2 else {})}
        for i in range(8)
    ] + [{"request_id": "parity-raw", "features": raw}]

    mm = ModelManager(s)
    mm.current = local_model_set(bundles, 0.5)
    app = create_app(s, store=SQLiteStore(s.state_dir / "http.db"), models=mm, start_background=False)
    http = {}
    for rec in records:
        r = app.test_client().post("/predict", json=rec)
        assert r.status_code == 200, r.get_json()
        http[rec["request_id"]] = r.get_json()

    kin = client("kinesis", s)
    seqs = put(kin, s, [json.dumps(r).encode() for r in records])
    c = make_consumer(s, bundles, SQLiteStore(s.state_dir / "stream.db"), fraction=0.5)
    c.run(max_idle_polls=3)
    stream = {r["request_id"]: r for r in read_stream(kin, s.output_stream)}

    assert set(stream) == set(http) == {r["request_id"] for r in records}
    assert {a["route"] for a in http.values()} == {"champion", "challenger"}  # both models answered
    assert http["parity-1"]["ignored_fields"] == ["extra"]
    assert http["parity-raw"]["renamed"] == {"Customer_Age": "customer_age"}
    for rid, h in http.items():
        st = stream[rid]
        assert set(h) - set(st) == HTTP_ONLY, rid
        assert set(st) - set(h) == STREAM_ONLY, rid
        assert {k: v for k, v in h.items() if k not in HTTP_ONLY} == {
            k: v for k, v in st.items() if k not in STREAM_ONLY
        }, rid
    by_rid = {r["request_id"]: seq for r, seq in zip(records, seqs)}
    assert all(stream[rid]["sequence_number"] == by_rid[rid][1] for rid in stream)
