"""The embedded stack's S3 + Kinesis endpoint: moto's server, with Kinesis calls taken one at a time.

    python -m ops.motoserver -H 127.0.0.1 -p 4566

moto (5.2.5) numbers a Kinesis record as the shard's highest sequence number + 1 without a lock
(`moto.kinesis.models.Shard.put_record`), and its server answers requests on several threads. Two
put_records on one stream at the same moment can then get the same number, and one record silently
replaces the other. The stream consumer polls shards in parallel threads, and several consumers
may run at once, so on plain `moto_server` a result could vanish from `results`. Real Kinesis has
no such problem. Here every Kinesis request holds one lock while moto answers it; S3 and the rest
stay concurrent. Otherwise this is `moto_server` (same app, same request handler).

Resharding as Kinesis does it (`reshard_like_kinesis`): moto's SplitShard / MergeShards (and so
UpdateShardCount) move the parents' records into the children under new sequence numbers, and
GetRecords never ends a closed shard. On Kinesis a parent keeps its records (readable until
retention), its children get only what is put after the reshard, and GetRecords on a closed
shard gives no NextShardIterator once its last record was read (SHARD_END). The consumers rely
on that to finish parents before children; here the server behaves the same.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
from collections import OrderedDict

from werkzeug.serving import run_simple


def is_kinesis(environ: dict) -> bool:
    """A Kinesis API call: JSON protocol (X-Amz-Target) or the RPC-v2 CBOR path."""
    return environ.get("HTTP_X_AMZ_TARGET", "").startswith("Kinesis_") or "/service/Kinesis_" in environ.get(
        "PATH_INFO", ""
    )


def one_kinesis_call_at_a_time(app):
    """WSGI middleware: Kinesis requests run (and produce their whole body) under one lock."""
    lock = threading.Lock()

    def wsgi(environ, start_response):
        if not is_kinesis(environ):
            return app(environ, start_response)
        with lock:
            body = app(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                if hasattr(body, "close"):
                    body.close()

    return wsgi


def reshard_like_kinesis() -> None:
    """Patch moto's Kinesis models: parents keep their records on split/merge; GetRecords on a closed
    shard read to its end gives no NextShardIterator."""
    from moto.kinesis import models
    from moto.kinesis.utils import decompose_shard_iterator

    if getattr(models.Stream, "_reshard_like_kinesis", False):
        return
    split, merge, get_records = models.Stream.split_shard, models.Stream.merge_shards, models.KinesisBackend.get_records
    shard_for_key = models.Stream.get_shard_for_key

    def keeping(stream, shard_ids: list[str], fn) -> None:
        kept = {sid: stream.shards[sid].records for sid in shard_ids if sid in stream.shards}
        for sid in kept:
            stream.shards[sid].records = OrderedDict()  # nothing for moto to move into the children
        try:
            fn()
        finally:
            for sid, records in kept.items():
                stream.shards[sid].records = records

    def split_shard(self, shard_to_split: str, new_starting_hash_key: str) -> None:
        keeping(self, [shard_to_split], lambda: split(self, shard_to_split, new_starting_hash_key))

    def merge_shards(self, shard_to_merge: str, adjacent_shard_to_merge: str) -> None:
        keeping(
            self,
            [shard_to_merge, adjacent_shard_to_merge],
            lambda: merge(self, shard_to_merge, adjacent_shard_to_merge),
        )

    def backend_get_records(self, stream_arn, shard_iterator, limit):
        nxt, records, behind = get_records(self, stream_arn, shard_iterator, limit)
        name, shard_id, _ = decompose_shard_iterator(nxt)
        shard = self.describe_stream(stream_arn=stream_arn, stream_name=name).get_shard(shard_id)
        last = int(decompose_shard_iterator(nxt)[2])
        if not shard.is_open and last >= shard.get_max_sequence_number():
            nxt = None  # SHARD_END
        return nxt, records, behind

    def get_shard_for_key(self, partition_key: str, explicit_hash_key: str):
        shard = shard_for_key(self, partition_key, explicit_hash_key)  # moto's checks; it may pick a closed one
        if shard is None or shard.is_open:
            return shard
        key = int(explicit_hash_key) if explicit_hash_key else int(hashlib.md5(partition_key.encode()).hexdigest(), 16)
        is_open = (sh for sh in self.shards.values() if sh.is_open and sh.starting_hash <= key <= sh.ending_hash)
        return next(is_open, shard)

    models.Stream.get_shard_for_key = get_shard_for_key
    models.Stream.split_shard = split_shard
    models.Stream.merge_shards = merge_shards
    models.KinesisBackend.get_records = backend_get_records
    models.Stream._reshard_like_kinesis = True


def main(argv: list[str] | None = None) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.server import MotoRequestHandler

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-H", "--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, default=4566)
    args = p.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto_server does
    reshard_like_kinesis()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, one_kinesis_call_at_a_time(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
