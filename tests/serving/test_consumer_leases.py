"""Consumers that take shards by lease, against a real moto Kinesis server: three consumers, one killed
mid-batch (results put, checkpoint not written, leases never released), one added later, a reshard
from 2 to 4 shards, 20,000 records.

What must hold: every record logged exactly once and answered on `results`; a result twice only for
the batches the killed consumer had in flight (documented: readers dedupe by shard + sequence
number); order kept per partition key on `results` and in the log; no checkpoint ever moves back;
the parent shards read to their end before any record of their children is processed."""

from __future__ import annotations

import collections
import json
import threading
import time

from tests.support.serving import example, local_model_set

N_RECORDS = 20_000
KEYS = 100  # partition keys
BATCH = 250
LEASE_S = 2.0


class Killed(BaseException):
    """Ends a consumer's thread where it stands, as SIGKILL would (no `except Exception` catches it)."""


class Journal:
    """What every consumer wrote, in the order it was written (one lock for all of them)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.logged: list[tuple[str, str, str]] = []  # (request_id, shard, seq) per log write, in order
        self.checkpoints: list[tuple[str, str]] = []  # (key, seq order) per accepted checkpoint write


class Recording:
    """A consumer's store: records log writes and accepted checkpoints; once `dead`, every call fails
    (the consumer's process is gone: it writes, renews and releases nothing more)."""

    def __init__(self, inner, journal: Journal, kill_at_checkpoint: int | None = None):
        self.inner, self.journal = inner, journal
        self.kill_at = kill_at_checkpoint
        self.checkpoints = 0
        self.dead = threading.Event()

    def _alive(self):
        if self.dead.is_set():
            raise ConnectionError("this consumer was killed (test)")

    def _log(self, records):
        with self.journal.lock:
            self.journal.logged += [(r["request_id"], r["shard_id"], r["sequence_number"]) for r in records]

    def insert_predictions(self, records):
        self._alive()
        n = self.inner.insert_predictions(records)
        self._log(records)
        return n

    def insert_encoded(self, items):
        self._alive()
        n = self.inner.insert_encoded(items)
        self._log([json.loads(b) for _, b in items])
        return n

    def insert_batch(self, batch):
        self._alive()
        n = self.inner.insert_batch(batch)
        self._log(batch.rows())
        return n

    def _checkpointed(self, key, seq):
        self.checkpoints += 1
        if self.kill_at is not None and self.checkpoints == self.kill_at:
            self.dead.set()
            raise Killed()  # the batch's results are out, its checkpoint is not written
        with self.journal.lock:
            self.journal.checkpoints.append((key, seq))

    def checkpoint_lease(self, key, owner, counter, checkpoint, seq, backwards_ok=False):
        self._alive()
        if backwards_ok:
            return self.inner.checkpoint_lease(key, owner, counter, checkpoint, seq, backwards_ok)
        self._checkpointed(key, seq)
        ok = self.inner.checkpoint_lease(key, owner, counter, checkpoint, seq)
        if not ok:
            with self.journal.lock:
                self.journal.checkpoints.pop()
        return ok

    def set_checkpoint(self, key, value):  # the per-shard table of older versions
        self._alive()
        seq = json.loads(value)["seq"] if value.startswith("{") else value
        self._checkpointed(key, seq.zfill(80))
        return self.inner.set_checkpoint(key, value)

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not callable(attr) or name in ("is_unavailable", "cache_key"):
            return attr

        def call(*a, **kw):
            self._alive()
            return attr(*a, **kw)

        return call


def read_ordered(kin, stream) -> list[dict]:
    """Every record of a (one-shard) stream in order."""
    (sh,) = kin.list_shards(StreamName=stream)["Shards"]
    it = kin.get_shard_iterator(StreamName=stream, ShardId=sh["ShardId"], ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    out = []
    while it:
        r = kin.get_records(ShardIterator=it, Limit=10_000)
        if not r["Records"]:
            break
        out += [json.loads(x["Data"]) for x in r["Records"]]
        it = r.get("NextShardIterator")
    return out


def in_order(pairs) -> bool:
    """Whether, per partition key, the record indices come in increasing order (first occurrences)."""
    last: dict[int, int] = {}
    seen = set()
    for i in pairs:
        if i in seen:
            continue
        seen.add(i)
        k = i % KEYS
        if last.get(k, -1) > i:
            return False
        last[k] = i
    return True


def test_three_consumers_a_kill_a_join_and_a_reshard(make_stream_settings, bundles):
    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore
    from serving.consumer import Consumer
    from serving.model import ModelManager

    s = make_stream_settings(
        consumer_batch_size=BATCH,
        consumer_poll_interval_s=0.02,
        consumer_lease_s=LEASE_S,
        stream_backoff_max_s=0.5,
    )
    kin = client("kinesis", s)
    db = s.state_dir / "p.db"
    journal = Journal()
    feats = [json.dumps(example(customer_age=26 + i % 40)) for i in range(40)]

    def put(lo: int, hi: int) -> None:
        for a in range(lo, hi, 500):
            recs = [
                {
                    "Data": f'{{"request_id":"r{i}","features":{feats[i % 40]}}}'.encode(),
                    "PartitionKey": f"pk{i % KEYS}",
                }
                for i in range(a, min(hi, a + 500))
            ]
            r = kin.put_records(StreamName=s.input_stream, Records=recs)
            assert r.get("FailedRecordCount", 0) == 0

    consumers, threads, stores = {}, {}, {}

    def start(name: str, kill_at: int | None = None) -> None:
        mm = ModelManager(s)
        mm.current = local_model_set(bundles)
        stores[name] = Recording(SQLiteStore(db), journal, kill_at)
        c = Consumer(s.model_copy(update={"consumer_id": name}), store=stores[name], models=mm)
        consumers[name] = c

        def run():
            try:
                c.run()
            except Killed:
                pass

        threads[name] = threading.Thread(target=run, name=name, daemon=True)
        threads[name].start()

    def logged() -> int:
        with journal.lock:
            return len({rid for rid, _, _ in journal.logged})

    def wait(cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what} ({logged()} logged)"
            time.sleep(0.05)

    put(0, 8_000)
    start("a", kill_at=6)  # killed at its 6th checkpoint: mid-run, mid-batch
    wait(lambda: stores["a"].checkpoints >= 2, 120, "consumer a to start")
    start("b")
    start("c")
    wait(lambda: stores["a"].dead.is_set(), 120, "consumer a to be killed")
    prefix = consumers["b"].lease_prefix()
    held_by_a = {lease.key[len(prefix) :] for lease in SQLiteStore(db).list_leases(prefix) if lease.owner == "a"}
    t_kill = time.monotonic()
    put(8_000, 12_000)
    kin.update_shard_count(StreamName=s.input_stream, TargetShardCount=4, ScalingType="UNIFORM_SCALING")
    start("d")  # joins after the reshard
    put(12_000, N_RECORDS)
    wait(lambda: logged() >= N_RECORDS, 240, "every record logged")
    took_over = time.monotonic() - t_kill
    for name in ("b", "c", "d"):
        consumers[name].stopping = True
    for t in threads.values():
        t.join(30)
        assert not t.is_alive()

    # the log: each record once (by its id), nothing else
    inner = SQLiteStore(db)
    rows = inner.find_predictions()
    assert len(rows) == N_RECORDS and {r["request_id"] for r in rows} == {f"r{i}" for i in range(N_RECORDS)}
    # results: every record answered; twice only for a batch the killed consumer had in flight
    results = read_ordered(kin, s.output_stream)
    by_pos = collections.Counter((r["shard_id"], r["sequence_number"]) for r in results)
    assert {r["request_id"] for r in results} == {f"r{i}" for i in range(N_RECORDS)}
    twice = {pos: n for pos, n in by_pos.items() if n > 1}
    assert all(n == 2 for n in twice.values()), twice
    assert {sh for sh, _ in twice} <= held_by_a and len(twice) <= BATCH * len(held_by_a), (len(twice), held_by_a)
    assert len({r["request_id"] for r in results}) == len(by_pos)  # one request id per record
    # order per partition key: on results, and in the order the log was written
    assert in_order(int(r["request_id"][1:]) for r in results)
    with journal.lock:
        writes = list(journal.logged)
        checkpoints = list(journal.checkpoints)
    assert in_order(int(rid[1:]) for rid, _, _ in writes)
    # no checkpoint ever moved back
    last: dict[str, str] = {}
    for key, seq in checkpoints:
        assert seq >= last.get(key, ""), (key, seq, last.get(key))
        last[key] = seq
    # the reshard: parents read to their end (SHARD_END) before any record of a child was logged
    shards = {sh["ShardId"]: sh for sh in kin.list_shards(StreamName=s.input_stream)["Shards"]}
    children = {sid: sh["ParentShardId"] for sid, sh in shards.items() if sh.get("ParentShardId")}
    assert len(children) == 4 and len(set(children.values())) == 2
    first_child = {p: min(k for k, (_, sh, _) in enumerate(writes) if children.get(sh) == p) for p in children.values()}
    last_parent = {p: max(k for k, (_, sh, _) in enumerate(writes) if sh == p) for p in children.values()}
    assert all(last_parent[p] < first_child[p] for p in first_child), (last_parent, first_child)
    leases = {lease.key.rsplit(":", 1)[1]: lease for lease in inner.list_leases(consumers["b"].lease_prefix())}
    assert all(leases[p].finished for p in children.values())
    assert all(leases[c].owner is None for c in children)  # released on a graceful stop
    # the killed consumer's leases were taken over by the others
    assert sum(consumers[n].leases.taken for n in ("b", "c", "d")) >= len(held_by_a) > 0
    assert took_over > 0
