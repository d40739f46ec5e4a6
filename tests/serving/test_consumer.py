"""The stream consumer in-process against a real moto Kinesis server (local model bundles)."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from botocore.exceptions import ClientError

from tests.serving.conftest import FlakyStore, example, local_model_set

pytestmark = pytest.mark.integration


def read_stream(kin, stream) -> list[dict]:
    out = []
    for sh in kin.list_shards(StreamName=stream)["Shards"]:
        it = kin.get_shard_iterator(StreamName=stream, ShardId=sh["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            r = kin.get_records(ShardIterator=it, Limit=10_000)
            out += [json.loads(x["Data"]) for x in r["Records"]]
            if not r["Records"]:
                break
            it = r["NextShardIterator"]
    return out


@pytest.fixture
def stream_settings(moto_endpoint, tmp_path, monkeypatch):
    from churnops.provision import ensure_streams
    from churnops.settings import Settings

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    tag = uuid.uuid4().hex[:8]
    s = Settings(_env_file=None, aws_endpoint_url=moto_endpoint, state_dir=tmp_path / "state",
                 input_stream=f"in-{tag}", output_stream=f"out-{tag}", dlq_stream=f"dlq-{tag}", stream_shards=2,
                 consumer_batch_size=25, consumer_poll_interval_s=0.01, mlflow_tracking_uri="http://127.0.0.1:9")
    ensure_streams(s)
    return s


def make_consumer(s, bundles, store, fraction=0.0):
    from serving.consumer import Consumer
    from serving.model import ModelManager

    mm = ModelManager(s)
    mm.current = local_model_set(bundles, fraction)
    return Consumer(s, store=store, models=mm)


def put(kin, s, payloads: list[bytes]) -> list[str]:
    seqs = []
    for i, p in enumerate(payloads):
        r = kin.put_record(StreamName=s.input_stream, Data=p, PartitionKey=f"k{i}")
        seqs.append((r["ShardId"], r["SequenceNumber"]))  # moto numbers are per shard
    return seqs


def test_raw_base64_poison_and_resume(stream_settings, bundles):
    from churnops.aws import client
    from serving.store_sqlite import SQLiteStore

    s = stream_settings
    kin = client("kinesis", s)
    store = FlakyStore(SQLiteStore(s.state_dir / "p.db"))
    good = [json.dumps({"request_id": f"s{i}", "features": example(customer_age=30 + i % 40)}).encode() for i in range(60)]
    b64 = [base64.b64encode(json.dumps(example()).encode()) for _ in range(10)]
    poison = [b"not json at all", json.dumps(example(gender="x")).encode(), b'{"customer_age": NaN}',
              base64.b64encode(b"[1,2")]
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
    logged = store.inner.find_predictions()
    assert {r["_id"] for r in logged} == {f"stream:{sh}:{q}" for sh, q in seqs[:70]}
    # the log's ts is the record's arrival on the stream: a re-emitted batch logs the same ts
    first = {r["_id"]: r["ts"] for r in logged}
    arrived = {f"stream:{sh}:{r['SequenceNumber']}": r["ApproximateArrivalTimestamp"].timestamp()
               for sh in c.shards for r in kin.get_records(ShardIterator=kin.get_shard_iterator(
                   StreamName=s.input_stream, ShardId=sh, ShardIteratorType="TRIM_HORIZON")["ShardIterator"],
                   Limit=1000)["Records"]}
    assert all(first[k] == arrived[k] for k in first)
    # checkpoints: a new consumer resumes after them and re-emits nothing
    for sh in c.shards:
        assert store.get_checkpoint(c.checkpoint_key(sh)) is not None
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
    from serving.store_sqlite import SQLiteStore

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
    from serving.store_sqlite import SQLiteStore

    s = stream_settings
    c = make_consumer(s, bundles, SQLiteStore(s.state_dir / "p.db"))
    real = c.kin.put_records
    sent = []

    def partial(StreamName, Records):
        sent.append(len(Records))
        if len(sent) == 1:  # first call: the second half fails
            resp = real(StreamName=StreamName, Records=Records[: len(Records) // 2])
            fails = [{"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}] * (len(Records) - len(Records) // 2)
            return {"FailedRecordCount": len(fails), "Records": resp["Records"] + fails}
        return real(StreamName=StreamName, Records=Records)

    c.kin.put_records = partial
    c._put_all(s.output_stream, [{"Data": json.dumps({"i": i}).encode(), "PartitionKey": str(i)} for i in range(10)])
    assert sent == [10, 5]
    from churnops.aws import client

    assert sorted(r["i"] for r in read_stream(client("kinesis", s), s.output_stream)) == list(range(10))


def test_consumers_split_shards(stream_settings, bundles):
    from churnops.aws import client
    from serving.store_sqlite import SQLiteStore

    s = stream_settings
    kin = client("kinesis", s)
    shards = sorted(x["ShardId"] for x in kin.list_shards(StreamName=s.input_stream)["Shards"])
    mine = []
    for i in range(2):
        si = s.model_copy(update={"consumer_index": i, "consumer_count": 2})
        mine.append(make_consumer(si, bundles, SQLiteStore(s.state_dir / "p.db")).my_shards())
    assert mine == [[shards[0]], [shards[1]]]


def test_decode_payload():
    from serving.consumer import decode_payload
    from serving.inference import BadInput

    assert decode_payload(b'{"a": 1}') == {"a": 1}
    assert decode_payload(base64.b64encode(b'{"a": 1}')) == {"a": 1}
    with pytest.raises(BadInput):
        decode_payload(b"@@@")
    with pytest.raises(BadInput):
        decode_payload(b"")
