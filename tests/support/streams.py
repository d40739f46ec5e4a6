"""Kinesis helpers of the consumer tests: put records, read a stream back, build a consumer on local bundles."""

from __future__ import annotations

import json
import uuid
from collections import Counter

from tests.support.serving import local_model_set


def stream_settings_for(moto_endpoint: str, state_dir, **over):
    """Settings on moto's Kinesis with streams of their own (unique names, created): two shards,
    batches of 25, polls every 10 ms, no MLflow; keyword arguments override any of them."""
    from churnops.aws import ensure_streams
    from churnops.settings import Settings

    tag = uuid.uuid4().hex[:8]
    values = {
        "aws_endpoint_url": moto_endpoint,
        "state_dir": state_dir,
        "input_stream": f"in-{tag}",
        "output_stream": f"out-{tag}",
        "dlq_stream": f"dlq-{tag}",
        "stream_shards": 2,
        "consumer_batch_size": 25,
        "consumer_poll_interval_s": 0.01,
        "mlflow_tracking_uri": "http://127.0.0.1:9",
    }
    s = Settings(_env_file=None, **(values | over))
    ensure_streams(s)
    return s


def one_shard(s, **update):
    """`s` with its input stream created again with one shard."""
    from churnops.aws import client, ensure_streams

    s = s.model_copy(update={"stream_shards": 1, **update})
    client("kinesis", s).delete_stream(StreamName=s.input_stream)
    ensure_streams(s)
    return s


def read_stream(kin, stream) -> list[dict]:
    """Every record of every shard of `stream`, decoded (shard by shard, each in order)."""
    out = []
    for sh in kin.list_shards(StreamName=stream)["Shards"]:
        it = kin.get_shard_iterator(StreamName=stream, ShardId=sh["ShardId"], ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        while it:
            r = kin.get_records(ShardIterator=it, Limit=10_000)
            out += [json.loads(x["Data"]) for x in r["Records"]]
            if not r["Records"]:
                break
            it = r["NextShardIterator"]
    return out


def put(kin, s, payloads: list[bytes]) -> list[tuple[str, str]]:
    """Put each payload on the input stream (partition key k<i>): their (shard id, sequence number)."""
    seqs = []
    for i, p in enumerate(payloads):
        r = kin.put_record(StreamName=s.input_stream, Data=p, PartitionKey=f"k{i}")
        seqs.append((r["ShardId"], r["SequenceNumber"]))  # moto numbers are per shard
    return seqs


def results_per_seq(kin, s) -> dict[tuple[str, str], int]:
    """How many results the output stream holds for each input (shard, sequence number)."""
    return dict(Counter((r["shard_id"], r["sequence_number"]) for r in read_stream(kin, s.output_stream)))


def make_consumer(s, bundles, store, fraction=0.0):
    """A consumer on settings `s` answering with local bundle `a` (and `b` as challenger at `fraction`)."""
    from serving.consumer import Consumer
    from serving.model import ModelManager

    mm = ModelManager(s)
    mm.current = local_model_set(bundles, fraction)
    return Consumer(s, store=store, models=mm)
