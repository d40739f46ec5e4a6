"""The stream consumer in-process against a real moto Kinesis server (local model bundles)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import Counter

import numpy as np
import pytest
from botocore.exceptions import ClientError

from churnops.monitoring.rejections import rejection_summary
from tests.support.serving import FlakyStore, example
from tests.support.streams import make_consumer, one_shard, put, read_stream, results_per_seq


def test_raw_base64_poison_and_resume(stream_settings, bundles):
    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore

    s = stream_settings
    kin = client("kinesis", s)
    store = FlakyStore(SQLiteStore(s.state_dir / "p.db"))
    good = [
        json.dumps({"request_id": f"s{i}", "features": example(customer_age=30 + i % 40)}).encode() for i in range(60)
    ]
    b64 = [base64.b64encode(json.dumps(example()).encode()) for _ in range(10)]
    poison = [
        b"not json at all",
        json.dumps(example(gender="x")).encode(),
        b'{"customer_age": NaN}',
        base64.b64encode(b"[1,2"),
    ]
    seqs = put(kin, s, good + b64 + poison)
    c = make_consumer(s, bundles, store)
    store.down = True  # the store is away for the first batches: spooled, nothing lost
    c.refresh_shards()
    c.poll_once()
    assert c.plog.spooled > 0
    store.down = False
    c.plog.replay_interval_s = 0.0
    c.run(max_idle_polls=3)
    results = read_stream(kin, s.output_stream)
    dlq = read_stream(kin, s.dlq_stream)
    by_seq = {(r["shard_id"], r["sequence_number"]): r for r in results}
    assert set(by_seq) == set(seqs[:70])
    assert {by_seq[q]["request_id"] for q in seqs[:60]} == {f"s{i}" for i in range(60)}
    assert all(by_seq[q]["request_id"] == q[1] for q in seqs[60:70])  # no request_id: the sequence number
    assert all(0 <= r["probability"] <= 1 and r["route"] == "champion" for r in results)
    assert {(d["shard_id"], d["sequence_number"]) for d in dlq} == set(seqs[70:])
    reasons = {(d["shard_id"], d["sequence_number"]): d for d in dlq}
    assert reasons[seqs[71]]["details"] == {"gender": reasons[seqs[71]]["details"]["gender"]}
    assert reasons[seqs[70]]["payload"] == "not json at all"
    assert "NaN" in reasons[seqs[72]]["details"]["body"]
    # the window's data quality counts each dead letter by reason and field (churnops/monitoring/rejections.py)
    counted = rejection_summary(store.inner, 0.0, time.time() + 60, 70, s)
    assert counted["total"] == 4 and counted["by_source"] == {"stream": 4}
    assert counted["by_reason"] == dict(Counter(d["reason_code"] for d in dlq))
    assert counted["by_field"]["gender"] == 1
    logged = store.inner.find_predictions()
    assert {r["_id"] for r in logged} == {c.log_id(sh, q) for sh, q in seqs[:70]}
    created = kin.describe_stream_summary(StreamName=s.input_stream)["StreamDescriptionSummary"][
        "StreamCreationTimestamp"
    ]
    assert c.log_id("shardId-000000000001", "7") == f"stream:{round(created.timestamp() * 1000)}:shardId-000000000001:7"
    # the log's ts is the record's arrival on the stream: a re-emitted batch logs the same ts
    first = {r["_id"]: r["ts"] for r in logged}
    arrived = {
        c.log_id(sh, r["SequenceNumber"]): r["ApproximateArrivalTimestamp"].timestamp()
        for sh in c.shards
        for r in kin.get_records(
            ShardIterator=kin.get_shard_iterator(
                StreamName=s.input_stream, ShardId=sh, ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"],
            Limit=1000,
        )["Records"]
    }
    assert all(first[k] == arrived[k] for k in first)
    # checkpoints: a new consumer resumes after them and re-emits nothing
    for sh in c.shards:
        assert c.leases.stored_checkpoint(sh) is not None
    c2 = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    c2.run(max_idle_polls=2)
    assert c2.processed == 0 and c2.dead == 0
    extra = put(kin, s, [json.dumps({"request_id": "late", "features": example()}).encode()])
    c3 = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    c3.run(max_idle_polls=2)
    assert c3.processed == 1
    assert {(r["shard_id"], r["sequence_number"]) for r in read_stream(kin, s.output_stream)} == set(seqs[:70] + extra)


def test_expired_iterator_is_renewed_from_checkpoint(stream_settings, bundles):
    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore

    s = stream_settings
    kin = client("kinesis", s)
    seqs = put(kin, s, [json.dumps(example()).encode() for _ in range(30)])
    c = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    real = c.kin.get_records
    calls = {"n": 0}

    def flaky(**kw):
        calls["n"] += 1
        if calls["n"] in (2, 3):
            raise ClientError({"Error": {"Code": "ExpiredIteratorException", "Message": "expired"}}, "GetRecords")
        return real(**kw)

    c.kin.get_records = flaky
    c.run(max_idle_polls=3)
    results = read_stream(kin, s.output_stream)
    assert {(r["shard_id"], r["sequence_number"]) for r in results} == set(seqs)
    assert len(results) == 30  # renewed AFTER the checkpoint: nothing twice


def test_put_records_retries_failed_entries(stream_settings, bundles):
    from churnops.store.sqlite import SQLiteStore

    s = stream_settings
    c = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    real = c.kin.put_records
    sent = []

    def partial(StreamName, Records):
        sent.append(len(Records))
        if len(sent) == 1:  # first call: the second half fails
            resp = real(StreamName=StreamName, Records=Records[: len(Records) // 2])
            fails = [{"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}] * (
                len(Records) - len(Records) // 2
            )
            return {"FailedRecordCount": len(fails), "Records": resp["Records"] + fails}
        return real(StreamName=StreamName, Records=Records)

    c.kin.put_records = partial
    c._put_all(s.output_stream, [{"Data": json.dumps({"i": i}).encode(), "PartitionKey": str(i)} for i in range(10)])
    assert sent == [10, 5]
    from churnops.aws import client

    assert sorted(r["i"] for r in read_stream(client("kinesis", s), s.output_stream)) == list(range(10))


def test_two_consumers_with_the_same_settings_answer_each_record_once(stream_settings, bundles):
    """A second consumer started beside the first with the very same settings (scaling, a rolling
    deploy, the same CONSUMER_INDEX): shards are shared by lease, handed over between batches, so
    each record gets one result and one log entry; each consumer has its own outbox folder."""
    import threading
    import time

    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore

    s = stream_settings.model_copy(update={"consumer_lease_s": 1.0})
    kin = client("kinesis", s)
    seqs = put(kin, s, [json.dumps({"request_id": f"t{i}", "features": example()}).encode() for i in range(600)])
    cs = [make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db")) for _ in range(2)]
    assert cs[0].outbox.dir != cs[1].outbox.dir
    threads = [threading.Thread(target=c.run) for c in cs]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while cs[0].processed + cs[1].processed < 600 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # anything more would show
    for c in cs:
        c.stopping = True
    for t in threads:
        t.join(30)
    results = read_stream(kin, s.output_stream)
    assert sorted((r["shard_id"], r["sequence_number"]) for r in results) == sorted(seqs)  # each once
    assert len(SQLiteStore(s.state_dir / "p.db").find_predictions()) == 600
    assert cs[0].processed + cs[1].processed == 600


def test_decode_payload():
    from serving.consumer import decode_payload
    from serving.inference import BadInput

    assert decode_payload(b'{"a": 1}') == {"a": 1}
    assert decode_payload(base64.b64encode(b'{"a": 1}')) == {"a": 1}
    with pytest.raises(BadInput):
        decode_payload(b"@@@")
    with pytest.raises(BadInput):
        decode_payload(b"")


def test_any_record_exception_is_a_dead_letter_and_the_shard_moves_on(stream_settings, bundles):
    """Nested JSON (RecursionError in the stdlib parser), non-UTF-8 bytes and an unexpected exception in
    validation each end in the DLQ with a reason; the valid records around them all get one result."""
    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore

    s = one_shard(stream_settings)
    kin = client("kinesis", s)
    valid = [json.dumps({"request_id": f"v{i}", "features": example(customer_age=30 + i)}).encode() for i in range(6)]
    nested = b"[" * 50_000 + b"]" * 50_000
    nested_inside = json.dumps({"features": example()}).encode()[:-2] + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    not_utf8 = b'{"customer_age": "\xff\xfe"}'
    explode = json.dumps(example(customer_age=77)).encode()
    payloads = [valid[0], nested, valid[1], nested_inside, valid[2], not_utf8, valid[3], explode, valid[4], valid[5]]
    seqs = put(kin, s, payloads)
    c = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    real = c.validator

    def validator(rec):  # any exception, not only BadInput, is the record's
        if isinstance(rec, dict) and rec.get("customer_age") == 77:
            raise KeyError("boom")
        return real(rec)

    c.validator = validator
    c.run(max_idle_polls=3)
    per_seq = results_per_seq(kin, s)
    good = [seqs[i] for i in (0, 2, 4, 6, 8, 9)]
    assert per_seq == {q: 1 for q in good}
    dlq = {(d["shard_id"], d["sequence_number"]): d for d in read_stream(kin, s.dlq_stream)}
    assert set(dlq) == {seqs[i] for i in (1, 3, 5, 7)}
    for i in (1, 3, 5, 7):
        d = dlq[seqs[i]]
        assert d["reason"] and d["reason_code"], d
        assert d["payload_bytes"] == len(payloads[i])
    assert "KeyError" in dlq[seqs[7]]["details"]["exception"]
    assert dlq[seqs[5]]["payload_encoding"] == "base64"
    assert base64.b64decode(dlq[seqs[5]]["payload"]) == not_utf8
    (sh,) = c.shards
    assert json.loads(c.leases.stored_checkpoint(sh))["seq"] == seqs[-1][1]


def test_large_invalid_record_is_a_bounded_dead_letter_and_nothing_is_emitted_twice(stream_settings, bundles):
    """A 600 KB invalid record with non-ASCII text: its DLQ entry stays far under 1 MiB (truncated, with the
    original size and SHA-256, the whole payload in S3) and every valid record has exactly one result."""
    import hashlib

    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore

    s = one_shard(stream_settings, bucket=f"dl-{uuid.uuid4().hex[:8]}")
    client("s3", s).create_bucket(Bucket=s.bucket)
    kin = client("kinesis", s)
    big = json.dumps({"request_id": "big", "features": example(gender="é" * 300_000)}, ensure_ascii=False).encode()
    assert 600_000 < len(big) < 1_000_000
    valid = [json.dumps({"request_id": f"v{i}", "features": example()}).encode() for i in range(8)]
    seqs = put(kin, s, valid[:4] + [big] + valid[4:])
    c = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    c.run(max_idle_polls=3)
    assert results_per_seq(kin, s) == {q: 1 for q in seqs[:4] + seqs[5:]}
    (sh,) = [x["ShardId"] for x in kin.list_shards(StreamName=s.dlq_stream)["Shards"]]
    it = kin.get_shard_iterator(StreamName=s.dlq_stream, ShardId=sh, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    raw = kin.get_records(ShardIterator=it)["Records"]
    assert len(raw) == 1 and len(raw[0]["Data"]) < 256 * 1024
    d = json.loads(raw[0]["Data"])
    assert (d["shard_id"], d["sequence_number"]) == seqs[4]
    assert d["reason_code"] == "unknown_category" and "gender" in d["details"]
    assert d["payload_truncated"] is True and d["payload_bytes"] == len(big)
    assert d["payload_sha256"] == hashlib.sha256(big).hexdigest()
    assert big.decode().startswith(d["payload"]) and 0 < len(d["payload"].encode()) <= s.dlq_preview_bytes
    bucket, key = d["payload_s3_uri"].removeprefix("s3://").split("/", 1)
    assert key.startswith("dead-letter/")
    assert client("s3", s).get_object(Bucket=bucket, Key=key)["Body"].read() == big


def test_dead_letter_entry_bounded_whatever_the_payload():
    from serving.deadletter import build_entry, encode_entry

    for data in (b"\x00" * 900_000, "\u2028é".encode() * 200_000, bytes(range(256)) * 4000, b"[" * 1_000_000):
        e = build_entry(
            data=data,
            reason="r" * 10_000,
            reason_code="c",
            details={f"f{i}": "x" * 5000 for i in range(500)},
            stream="in",
            shard_id="sh",
            sequence_number="1",
            partition_key="k",
            preview_bytes=65_536,
        )
        body = encode_entry(e, 150_000)
        assert len(body) <= 150_000
        d = json.loads(body)
        assert d["payload_bytes"] == len(data) and d["payload_truncated"] is True


def test_put_records_failing_past_its_retries_goes_to_the_outbox_not_a_loop(stream_settings, bundles):
    """The output stream takes half a batch, then refuses everything for longer than the retries: the taken
    half is never emitted again, the rest waits on disk (the shard pauses) and goes out when the stream is back."""
    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore

    s = one_shard(stream_settings, stream_put_retries=2, stream_backoff_max_s=0.2)
    kin = client("kinesis", s)
    seqs = put(kin, s, [json.dumps({"request_id": f"v{i}", "features": example()}).encode() for i in range(20)])
    c = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    real = c.kin.put_records
    calls = {"n": 0}
    refused = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}

    def flaky(StreamName, Records):
        if StreamName != s.output_stream:
            return real(StreamName=StreamName, Records=Records)
        calls["n"] += 1
        if calls["n"] == 1:
            half = len(Records) // 2
            resp = real(StreamName=StreamName, Records=Records[:half])
            return {
                "FailedRecordCount": len(Records) - half,
                "Records": resp["Records"] + [refused] * (len(Records) - half),
            }
        if calls["n"] <= 6:
            return {"FailedRecordCount": len(Records), "Records": [refused] * len(Records)}
        return real(StreamName=StreamName, Records=Records)

    c.kin.put_records = flaky
    c.refresh_shards()
    c.poll_once()  # the batch: half out, the rest in the outbox after 2 retries; checkpoint moved
    assert c.outbox.count() == 10
    assert results_per_seq(kin, s) == {q: 1 for q in seqs[:10]}
    c.run(max_idle_polls=20)
    assert c.outbox.count() == 0
    assert results_per_seq(kin, s) == {q: 1 for q in seqs}


def test_entry_kinesis_refuses_for_itself_is_set_aside(stream_settings, bundles):
    """An entry over Kinesis' limit (refused with ValidationException) never blocks the others."""
    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore

    s = stream_settings
    c = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    entries = [{"Data": json.dumps({"i": i}).encode(), "PartitionKey": str(i)} for i in range(4)]
    entries.insert(2, {"Data": b"x" * (1024 * 1024 + 1), "PartitionKey": "big"})
    assert c._put_all(s.output_stream, entries) == []
    assert sorted(r["i"] for r in read_stream(client("kinesis", s), s.output_stream)) == [0, 1, 2, 3]
    rejected = (c.outbox.dir / "rejected" / "rejected.jsonl").read_text().splitlines()
    assert len(rejected) == 1 and json.loads(rejected[0])["key"] == "big"


def test_transient_endpoint_errors_do_not_end_the_run_loop(stream_settings, bundles):
    """EndpointConnectionError on get_records, list_shards and put_records (once each), a 5xx answer: the loop
    backs off, goes on, and every record gets exactly one result."""
    from botocore.exceptions import EndpointConnectionError

    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore

    s = stream_settings.model_copy(update={"stream_backoff_max_s": 0.2})
    kin = client("kinesis", s)
    seqs = put(kin, s, [json.dumps({"request_id": f"v{i}", "features": example()}).encode() for i in range(60)])
    c = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    down = EndpointConnectionError(endpoint_url=s.aws_endpoint_url)
    faults = {"get_records": [2, 5], "list_shards": [1], "put_records": [2], "describe_stream_summary": [2]}
    calls = {k: 0 for k in faults}

    def wrap(name):
        real = getattr(c.kin, name)

        def call(**kw):
            calls[name] += 1
            if calls[name] in faults[name]:
                if name == "get_records" and calls[name] == 5:
                    raise ClientError(
                        {
                            "Error": {"Code": "InternalFailure", "Message": "oops"},
                            "ResponseMetadata": {"HTTPStatusCode": 500},
                        },
                        "GetRecords",
                    )
                raise down
            return real(**kw)

        setattr(c.kin, name, call)

    for name in faults:
        wrap(name)
    c.run(max_idle_polls=5)
    assert all(calls[k] >= max(v) for k, v in faults.items()), calls
    assert results_per_seq(kin, s) == {q: 1 for q in seqs}


def test_recreated_stream_stale_checkpoint_is_discarded(stream_settings, bundles):
    """Consume, delete and create the input stream again, put new records: the old checkpoints (numbers
    beyond the new stream's) are not used (the new stream has leases of its own, keyed by its creation
    time), and every new record gets its result."""
    import time

    from churnops.aws import client, ensure_streams
    from churnops.store.sqlite import SQLiteStore

    s = one_shard(stream_settings)
    kin = client("kinesis", s)
    put(kin, s, [json.dumps({"request_id": f"old{i}", "features": example()}).encode() for i in range(30)])
    c = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    c.run(max_idle_polls=2)
    assert c.processed == 30
    kin.delete_stream(StreamName=s.input_stream)
    time.sleep(0.01)
    ensure_streams(s)
    new = put(kin, s, [json.dumps({"request_id": f"new{i}", "features": example()}).encode() for i in range(5)])
    c2 = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    c2.run(max_idle_polls=2)
    assert c2.processed == 5
    got = [r for r in read_stream(kin, s.output_stream) if r["request_id"].startswith("new")]
    assert sorted((r["shard_id"], r["sequence_number"]) for r in got) == sorted(new)
    logged = c2.store.find_predictions()
    assert len(logged) == 35  # the new stream's records are not taken for the old one's (same numbers)
    assert sorted(r["request_id"] for r in logged if r["request_id"].startswith("new")) == [f"new{i}" for i in range(5)]
    # the new checkpoint belongs to the new stream: a restart resumes after it
    c3 = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    c3.run(max_idle_polls=2)
    assert c3.processed == 0 and c3.discarded_checkpoints == 0


def test_stream_created_again_while_the_consumer_runs(stream_settings, bundles):
    """The running consumer notices the new stream at its next shard refresh and reads it from the start."""
    import math

    from churnops.aws import client, ensure_streams
    from churnops.store.sqlite import SQLiteStore

    s = one_shard(stream_settings)
    kin = client("kinesis", s)
    put(kin, s, [json.dumps({"request_id": f"old{i}", "features": example()}).encode() for i in range(20)])
    c = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    c.run(max_idle_polls=2)
    kin.delete_stream(StreamName=s.input_stream)
    ensure_streams(s)
    new = put(kin, s, [json.dumps({"request_id": f"new{i}", "features": example()}).encode() for i in range(25)])
    c._last_shard_refresh = -math.inf  # as 30 s later
    c.run(max_idle_polls=2)
    got = {
        (r["shard_id"], r["sequence_number"])
        for r in read_stream(kin, s.output_stream)
        if r["request_id"].startswith("new")
    }
    assert got == set(new)


def test_checkpoint_without_identity_is_checked_against_the_shard(stream_settings, bundles):
    """A bare sequence number (as stored before identities) resumes only where the shard has that record."""
    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore

    s = one_shard(stream_settings)
    kin = client("kinesis", s)
    seqs = put(kin, s, [json.dumps({"request_id": f"r{i}", "features": example()}).encode() for i in range(6)])
    (sh,) = {q[0] for q in seqs}
    store = SQLiteStore(s.state_dir / "p.db")
    c = make_consumer(s, bundles, store)
    store.set_checkpoint(c.checkpoint_key(sh), "2981")  # another stream's number: not in this shard
    c.run(max_idle_polls=2)
    assert c.processed == 6 and c.discarded_checkpoints == 1
    # the older table is read when a shard's lease is created: a new stream (its own leases)
    s = one_shard(s)
    seqs = put(kin, s, [json.dumps({"request_id": f"r{i}", "features": example()}).encode() for i in range(6)])
    store.set_checkpoint(c.checkpoint_key(sh), seqs[2][1])  # a record of this shard: resume after it
    c2 = make_consumer(s, bundles, store)
    c2.run(max_idle_polls=2)
    assert c2.processed == 3 and c2.discarded_checkpoints == 0


def test_model_failing_on_everything_pauses_the_shard_not_the_dlq(stream_settings, bundles):
    """A model that fails on every record (and on the contract's example) is not the records' fault: no
    dead letters, no checkpoint move; once the model works again every record gets its result. A model
    that fails on one record only makes that record a dead letter."""
    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore

    s = one_shard(stream_settings, stream_backoff_max_s=0.1)
    kin = client("kinesis", s)
    seqs = put(
        kin,
        s,
        [json.dumps({"request_id": f"r{i}", "features": example(customer_age=30 + i)}).encode() for i in range(8)],
    )
    c = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    bundle = c.models.current.champion.bundle
    real = bundle.predict_records
    state = {"broken": True}

    def predict(records):
        if state["broken"] or any(r["customer_age"] == 33 for r in records):
            raise RuntimeError("model broken")
        return real(records)

    bundle.predict_records = predict
    c.run(max_idle_polls=3)
    assert c.processed == 0 and c.dead == 0 and read_stream(kin, s.dlq_stream) == []
    (sh,) = c.shards
    assert c.leases.stored_checkpoint(sh) is None
    state["broken"] = False
    c.shards[sh].not_before = 0.0
    c.stopping = False
    c.run(max_idle_polls=3)
    assert results_per_seq(kin, s) == {q: 1 for q in seqs[:3] + seqs[4:]}
    (d,) = read_stream(kin, s.dlq_stream)
    assert (d["shard_id"], d["sequence_number"], d["reason_code"]) == (*seqs[3], "prediction_failed")


def strict_json(data: bytes):
    """JSON as the standard defines it: a NaN or Infinity token is an error."""

    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(data, parse_constant=refuse)


def test_a_nan_answer_is_null_on_the_stream_as_over_http(stream_settings, bundles):
    """A model that answers NaN: the stream's result is strict JSON with null (the HTTP answers' encoder,
    serving/encoding.py), not a NaN token a strict reader refuses."""
    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore

    s = stream_settings
    kin = client("kinesis", s)
    store = SQLiteStore(s.state_dir / "p.db")
    put(kin, s, [json.dumps({"request_id": "nan1", "features": example()}).encode()])
    c = make_consumer(s, bundles, store)
    c.models.current.champion.bundle.predict_records = lambda recs: np.full(len(recs), np.nan)
    c.run(max_idle_polls=3)
    raw = []
    for sh in kin.list_shards(StreamName=s.output_stream)["Shards"]:
        it = kin.get_shard_iterator(StreamName=s.output_stream, ShardId=sh["ShardId"], ShardIteratorType="TRIM_HORIZON")
        raw += [r["Data"] for r in kin.get_records(ShardIterator=it["ShardIterator"], Limit=100)["Records"]]
    assert len(raw) == 1 and b"NaN" not in raw[0]
    streamed = strict_json(raw[0])
    assert streamed["request_id"] == "nan1" and streamed["probability"] is None
    assert streamed["route"] == "champion" and streamed["model_run_id"] == "localrun1"
    store.close()
