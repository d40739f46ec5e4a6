"""The embedded Kinesis endpoint keeps every record when puts arrive at the same moment."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import boto3

from ops.localservers import Server, free_port, wait_http
from ops.motoserver import is_kinesis


def test_kinesis_requests_are_recognised():
    assert is_kinesis({"HTTP_X_AMZ_TARGET": "Kinesis_20131202.PutRecords"})
    assert is_kinesis({"PATH_INFO": "/service/Kinesis_20131202/operation/PutRecords"})
    assert not is_kinesis({"HTTP_X_AMZ_TARGET": "", "PATH_INFO": "/bucket/key"})


def concurrent_puts(url: str, threads: int = 8, calls: int = 25, per_call: int = 40) -> tuple[int, int, int]:
    kin = boto3.client(
        "kinesis", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    kin.create_stream(StreamName="race", ShardCount=1)

    def put(t):
        seqs = []
        for c in range(calls):
            r = kin.put_records(
                StreamName="race",
                Records=[{"Data": f"{t}-{c}-{i}".encode(), "PartitionKey": "k"} for i in range(per_call)],
            )
            seqs += [x["SequenceNumber"] for x in r["Records"]]
        return seqs

    with ThreadPoolExecutor(threads) as pool:
        seqs = [s for part in pool.map(put, range(threads)) for s in part]
    it = kin.get_shard_iterator(StreamName="race", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    stored = []
    while it:
        r = kin.get_records(ShardIterator=it, Limit=10_000)
        stored += [x["Data"] for x in r["Records"]]
        if not r["Records"]:
            break
        it = r["NextShardIterator"]
    return threads * calls * per_call, len(set(seqs)), len(set(stored))


def test_concurrent_put_records_lose_nothing(real_server, tmp_path):
    port = free_port()
    srv = Server([sys.executable, "-m", "ops.motoserver", "-H", "127.0.0.1", "-p", str(port)], tmp_path / "moto.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/moto-api/", 60, srv.proc, tmp_path / "moto.log")
        sent, distinct_seqs, stored = concurrent_puts(url)
    finally:
        srv.stop()
    assert distinct_seqs == sent and stored == sent
