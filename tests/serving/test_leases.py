"""The shard lease table on both store backends (SQLite for real, MongoDB on mongomock) and the
coordinator's rules (take, renew, expiry, hand-off on balancing, parents before children)."""

from __future__ import annotations

import mongomock
import pytest

from churnops.store.base import SHARD_END, Lease, seq_order
from churnops.store.mongo import MongoStore
from churnops.store.sqlite import SQLiteStore
from serving.leases import LeaseCoordinator

P = "kinesis:in:1700000000000:"


@pytest.fixture(params=["sqlite", "mongo"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "p.db")
    else:
        s = MongoStore(mongomock.MongoClient(), "churn")
    yield s
    s.close()


def test_create_get_list(store):
    assert store.create_lease(Lease(P + "shardId-000000000001", parents=[P + "shardId-000000000000"]))
    assert store.create_lease(Lease(P + "shardId-000000000000"))
    assert store.create_lease(Lease("kinesis:other:1:shardId-000000000000"))
    assert not store.create_lease(Lease(P + "shardId-000000000000", owner="late"))  # exists: untouched
    got = store.list_leases(P)
    assert [x.key for x in got] == [P + "shardId-000000000000", P + "shardId-000000000001"]
    assert got[0].owner is None and got[0].counter == 0 and got[0].checkpoint is None
    assert got[1].parents == [P + "shardId-000000000000"]
    assert store.get_lease("nope") is None


def test_compare_and_set_on_the_counter(store):
    k = P + "s0"
    store.create_lease(Lease(k))
    assert store.cas_lease(k, 0, "a", 100.0, None, True)
    assert not store.cas_lease(k, 0, "b", 200.0, None, True)  # a stale counter loses
    assert store.cas_lease(k, 1, "a", 150.0, None, False)  # a renewal keeps the counter
    got = store.get_lease(k)
    assert (got.owner, got.counter, got.expires, got.pending_owner) == ("a", 1, 150.0, None)
    assert store.cas_lease(k, 1, "a", 150.0, "b", True)  # b asks for it
    got = store.get_lease(k)
    assert (got.owner, got.counter, got.pending_owner) == ("a", 2, "b")


def test_checkpoint_only_by_the_owner_at_its_counter_and_never_backwards(store):
    k = P + "s0"
    store.create_lease(Lease(k))
    store.cas_lease(k, 0, "a", 100.0, None, True)
    assert not store.checkpoint_lease(k, "b", 1, '{"seq": "5"}', seq_order("5"))  # not the owner
    assert not store.checkpoint_lease(k, "a", 0, '{"seq": "5"}', seq_order("5"))  # an old counter
    assert store.checkpoint_lease(k, "a", 1, '{"seq": "9"}', seq_order("9"))
    # integers, not strings: "10" comes after "9" (as text it would sort before)
    assert store.checkpoint_lease(k, "a", 1, '{"seq": "10"}', seq_order("10"))
    assert not store.checkpoint_lease(k, "a", 1, '{"seq": "9"}', seq_order("9"))  # backwards: refused
    assert store.get_lease(k).checkpoint == '{"seq": "10"}'
    big = "49590338271490256608559692538361571095921575989136588898"  # a 56-digit Kinesis number
    assert store.checkpoint_lease(k, "a", 1, big, seq_order(big))
    assert store.checkpoint_lease(k, "a", 1, SHARD_END, seq_order(SHARD_END))
    assert not store.checkpoint_lease(k, "a", 1, big, seq_order(big))  # nothing after SHARD_END
    assert store.checkpoint_lease(k, "a", 1, None, seq_order(None), backwards_ok=True)  # discard on purpose
    got = store.get_lease(k)
    assert got.checkpoint is None and got.seq == ""


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def shards(store, keys, parents=None):
    parents = parents or {}
    for k in keys:
        store.create_lease(Lease(P + k, parents=[P + p for p in parents.get(k, [])]))


def coordinator(store, name, clock, duration=10.0):
    return LeaseCoordinator(store, P, name, duration, clock=clock)


def test_takeover_after_expiry_and_the_old_owner_is_fenced_off(store):
    clock = Clock()
    shards(store, ["s0", "s1"])
    a, b = coordinator(store, "a", clock), coordinator(store, "b", clock)
    a.tick()
    assert sorted(a.held) == ["s0", "s1"]  # alone: the fair share is everything
    assert a.checkpoint("s0", '{"seq": "3"}', "3")
    b.tick()
    assert b.held == {}  # both leases live, a has no more than its share of two consumers? it has 2 > 1
    lease = store.get_lease(P + "s0") if store.get_lease(P + "s0").pending_owner else store.get_lease(P + "s1")
    assert lease.pending_owner == "b"  # b asked for one instead of taking it
    clock.t += 11  # a died: nothing renewed
    b.tick()
    assert sorted(b.held) == ["s0", "s1"] and b.taken == 2
    assert not a.checkpoint("s0", '{"seq": "4"}', "4")  # a lost the lease: refused, and a drops the shard
    assert "s0" not in a.held
    assert store.get_lease(P + "s0").checkpoint == '{"seq": "3"}'


def test_a_joining_consumer_gets_its_share_by_hand_off(store):
    clock = Clock()
    shards(store, ["s0", "s1", "s2", "s3"])
    a = coordinator(store, "a", clock)
    a.tick()
    assert len(a.held) == 4
    b = coordinator(store, "b", clock)
    for _ in range(4):  # b asks, a hands over after its batch, b adopts; twice
        b.tick()
        a.tick()
    b.tick()
    assert len(a.held) == 2 and len(b.held) == 2 and not set(a.held) & set(b.held)
    for sh in b.held:
        lease = store.get_lease(P + sh)
        assert lease.owner == "b" and lease.pending_owner is None
    c = coordinator(store, "c", clock)
    for _ in range(4):
        c.tick()
        a.tick()
        b.tick()
    assert sorted(len(x.held) for x in (a, b, c)) == [1, 1, 2]
    assert a.lost == b.lost == 0  # handed over, never lost


def test_hand_off_waits_for_the_batch_in_flight(store):
    clock = Clock()
    shards(store, ["s0", "s1"])
    a, b = coordinator(store, "a", clock), coordinator(store, "b", clock)
    a.tick()
    b.tick()  # asks for one
    asked = next(sh for sh in ("s0", "s1") if store.get_lease(P + sh).pending_owner == "b")
    with a.processing(asked) as mine:
        assert mine
        a.tick()  # learns of the request; the batch is in flight: no hand-over yet
        assert store.get_lease(P + asked).owner == "a"
        assert a.checkpoint(asked, '{"seq": "7"}', "7")  # the batch in flight checkpoints
    assert not a.may_process(asked)  # no new batch once a hand-off is asked for
    a.tick()
    lease = store.get_lease(P + asked)
    assert lease.owner == "b" and lease.checkpoint == '{"seq": "7"}'
    b.tick()
    assert list(b.held) == [asked] and b.may_process(asked)


def test_children_wait_for_their_parents_shard_end(store):
    clock = Clock()
    shards(store, ["s0", "s1", "s2"], parents={"s1": ["s0"], "s2": ["s0"]})
    a = coordinator(store, "a", clock)
    a.tick()
    assert list(a.held) == ["s0"]  # the children are not ready
    assert a.finish("s0")
    assert store.get_lease(P + "s0").finished and store.get_lease(P + "s0").owner is None
    a.tick()
    assert sorted(a.held) == ["s1", "s2"]


def test_release_all_lets_others_take_at_once(store):
    clock = Clock()
    shards(store, ["s0"])
    a, b = coordinator(store, "a", clock), coordinator(store, "b", clock)
    a.tick()
    a.release_all()
    b.tick()
    assert list(b.held) == ["s0"]
