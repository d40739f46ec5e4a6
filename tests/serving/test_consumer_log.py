"""The stream consumer never emits nor checkpoints a prediction it did not log (store or spool)."""

from __future__ import annotations

import json

from tests.support.serving import FlakyStore, example
from tests.support.streams import make_consumer, put, read_stream, results_per_seq


def test_store_down_and_spool_full_emits_nothing_and_keeps_the_checkpoint(make_stream_settings, bundles):
    """The store is down and the spool cannot take the batch's log records: the consumer puts no result
    on the stream and does not move (nor remember) its checkpoint; the shard waits and retries, and once
    the store is back every record gets exactly one result, each of them logged."""
    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore

    s = make_stream_settings(
        stream_shards=1,
        stream_backoff_max_s=0.1,
        spool_max_bytes=2_000,  # a few records: the spool is full after the first write
        log_retry_max_s=0.05,
    )
    kin = client("kinesis", s)
    seqs = put(kin, s, [json.dumps({"request_id": f"f{i}", "features": example()}).encode() for i in range(20)])
    inner = SQLiteStore(s.state_dir / "p.db")
    store = FlakyStore(inner)
    store.down = True
    c = make_consumer(s, bundles, store)
    c.run(max_idle_polls=5)
    (sh,) = c.shards
    assert c.plog.dropped > 0 and c.plog.spool_full  # the spool could not take them
    assert read_stream(kin, s.output_stream) == [] and c.processed == 0
    assert c.shards[sh].last_seq is None and c._pending_checkpoints == {}
    assert c.leases.stored_checkpoint(sh) is None
    store.down = False
    c.shards[sh].not_before = 0.0
    c.stopping = False
    c.run(max_idle_polls=3)
    assert results_per_seq(kin, s) == {q: 1 for q in seqs}
    assert {r["_id"] for r in inner.find_predictions()} == {c.log_id(*q) for q in seqs}
    assert c.leases.stored_checkpoint(sh) is not None
