"""Contract tests of the prediction-log store, parametrised over SQLite, MongoDB (mongomock) and the
tests' in-memory fake (tests/support/memory_store.py, which the monitoring tests and bench-monitor use)."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from churnops.store.base import PredictionStore
from tests.support.memory_store import MemoryStore


def rec(i: int, ts: float, **over) -> dict:
    return {
        "_id": f"id{i}",
        "ts": ts,
        "request_id": f"id{i}",
        "source": "http",
        "model_run_id": "run1",
        "model_version": "1",
        "route": "champion",
        "features": {"customer_age": 40 + i, "gender": "f"},
        "probability": i / 100,
        "decision": int(i % 2),
        "latency_ms": 1.5,
        **over,
    }


@pytest.fixture(params=["sqlite", "mongo", "memory"])
def store(request, tmp_path) -> PredictionStore:
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "sqlite":
        from churnops.store.sqlite import SQLiteStore

        s = SQLiteStore(tmp_path / "p.db")
    else:
        import mongomock

        from churnops.store.mongo import MongoStore

        s = MongoStore(mongomock.MongoClient(), "churn")
    yield s
    s.close()


def test_insert_is_idempotent_first_write_wins(store):
    assert store.insert_predictions([rec(i, 100.0 + i) for i in range(5)]) == 5
    # 3 of these 5 are new; a backend may deduplicate on insert (MongoDB) or on read (SQLite chunks)
    assert store.insert_predictions([rec(i, 100.0 + i, probability=0.99) for i in range(3, 8)]) in (3, 5)
    assert store.count_predictions() == 8
    got = {r["_id"]: r for r in store.find_predictions()}
    assert got["id3"]["probability"] == 0.03  # first write wins: a replay never rewrites history
    assert got["id7"]["probability"] == 0.99
    assert got["id1"]["features"] == {"customer_age": 41, "gender": "f"}
    assert store.insert_predictions([]) == 0


def batch_of(ids: list[int], ts: float, probability: float = 0.25):
    import numpy as np

    from churnops.store.base import PredictionBatch

    rids = [f"id{i}" for i in ids]
    return PredictionBatch(
        const={
            "ts": ts,
            "source": "http",
            "model_run_id": "run1",
            "model_version": "1",
            "route": "champion",
            "latency_ms": 0.01,
            "batch": True,
        },
        cols={
            "_id": rids,
            "request_id": rids,
            "probability": np.full((len(ids), 2), probability)[:, 1],  # a view
            "decision": np.array([i % 2 for i in ids]),
        },
        features={"customer_age": np.array([40.0 + i for i in ids]), "gender": ["f" if i % 2 else None for i in ids]},
    )


def test_batches_read_back_as_records(store):
    b = batch_of(list(range(4)), 500.0)
    assert store.insert_batch(b) == 4
    assert store.insert_batch(b) == 0  # a replayed spool file: nothing new
    store.insert_predictions([rec(2, 400.0), rec(9, 600.0)])  # id2 again, written later: ignored
    got = store.find_predictions()
    assert [r["_id"] for r in got] == ["id0", "id1", "id2", "id3", "id9"]
    assert got[1] == {
        "_id": "id1",
        "ts": 500.0,
        "request_id": "id1",
        "source": "http",
        "model_run_id": "run1",
        "model_version": "1",
        "route": "champion",
        "features": {"customer_age": 41.0, "gender": "f"},
        "probability": 0.25,
        "decision": 1,
        "latency_ms": 0.01,
        "batch": True,
    }
    assert got[0]["features"]["gender"] is None and type(got[0]["decision"]) is int
    assert store.count_predictions() == 5 and store.count_predictions(450.0, 550.0) == 4
    assert [r["_id"] for r in store.find_predictions(limit=2)] == ["id0", "id1"]


def test_batches_with_the_same_ids_joined_differently_are_both_kept(store):
    a, b = batch_of([0, 1], 5.0), batch_of([0, 1], 5.0)
    a.cols["_id"] = a.cols["request_id"] = ["a\nb", "c"]
    b.cols["_id"] = b.cols["request_id"] = ["a", "b\nc"]
    assert store.insert_batch(a) == 2 and store.insert_batch(b) == 2
    assert sorted(r["_id"] for r in store.find_predictions()) == ["a", "a\nb", "b\nc", "c"]


def test_windows_are_half_open_sorted_and_limited(store):
    store.insert_predictions([rec(i, 1000.0 + i) for i in reversed(range(10))])
    w = store.find_predictions(1002.0, 1006.0)
    assert [r["_id"] for r in w] == ["id2", "id3", "id4", "id5"]
    assert store.count_predictions(1002.0, 1006.0) == 4
    assert store.count_predictions(start=1008.0) == 2 and store.count_predictions(end=1001.0) == 1
    assert [r["_id"] for r in store.find_predictions(limit=3)] == ["id0", "id1", "id2"]
    assert store.find_predictions(2000.0, 3000.0) == []


def test_feedback_last_write_wins_and_filters(store):
    store.add_feedback("a", 1, 10.0)
    store.add_feedback("b", 0, 20.0)
    store.add_feedback("a", 0, 30.0)
    fb = {f["request_id"]: f for f in store.find_feedback()}
    assert fb["a"]["outcome"] == 0 and fb["a"]["ts"] == 30.0 and len(fb) == 2
    assert [f["request_id"] for f in store.find_feedback(["b", "zz"])] == ["b"]
    assert [f["request_id"] for f in store.find_feedback(start=25.0)] == ["a"]
    assert store.find_feedback([]) == []
    store.add_feedback_many(
        [
            {"request_id": "c", "outcome": 1, "ts": 40.0},
            {"request_id": "b", "outcome": 1, "ts": 41.0},
            {"request_id": "c", "outcome": 0, "ts": 42.0},
        ]
    )
    fb = {f["request_id"]: (f["outcome"], f["ts"]) for f in store.find_feedback()}
    assert fb == {"a": (0, 30.0), "b": (1, 41.0), "c": (0, 42.0)}


def test_checkpoints_and_reports(store):
    assert store.get_checkpoint("kinesis:predictions:shard-0") is None
    store.set_checkpoint("kinesis:predictions:shard-0", "495")
    store.set_checkpoint("kinesis:predictions:shard-0", "496")
    assert store.get_checkpoint("kinesis:predictions:shard-0") == "496"
    for i in range(5):
        store.save_report({"_id": f"rep{i}", "ts": float(i), "rows": i * 10})
    store.save_report({"_id": "rep1", "ts": 9.0, "rows": 99})
    reps = store.list_reports(limit=3)
    assert [r["_id"] for r in reps] == ["rep1", "rep4", "rep3"] and reps[0]["rows"] == 99
    assert store.ping() is True


def _writer(path, k):
    from churnops.store.sqlite import SQLiteStore

    s = SQLiteStore(path)
    for j in range(20):
        s.insert_predictions([rec(k * 1000 + j * 10 + i, float(j)) for i in range(10)])
    s.close()


def test_sqlite_concurrent_processes(tmp_path):
    """Several processes (gunicorn workers + consumer) writing one file lose nothing."""
    from churnops.store.sqlite import SQLiteStore

    path = tmp_path / "p.db"
    ctx = mp.get_context("spawn")  # fresh processes, all opening the new file at once
    procs = [ctx.Process(target=_writer, args=(path, k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert SQLiteStore(path).count_predictions() == 600


def test_sqlite_limit_reads_only_the_chunks_it_needs(tmp_path):
    """Chunks written out of time order (several workers) still give the oldest records first."""
    from churnops.store.sqlite import SQLiteStore

    s = SQLiteStore(tmp_path / "p.db")
    s.insert_predictions([rec(i, 2000.0 + i) for i in range(10, 20)])
    s.insert_predictions([rec(i, 1000.0 + i) for i in range(10)])
    s.insert_predictions([rec(i, 1500.0 + i) for i in range(20, 30)])
    assert [r["_id"] for r in s.find_predictions(limit=12)] == [f"id{i}" for i in range(10)] + ["id20", "id21"]
    assert [r["_id"] for r in s.find_predictions(1525.0, 2012.0, limit=7)] == [f"id{i}" for i in range(25, 30)] + [
        "id10",
        "id11",
    ]


def test_sqlite_reads_what_only_the_json_fallback_can_write(tmp_path):
    """A lone surrogate (accepted by the stdlib JSON parser) or a NaN never makes a chunk unreadable."""
    from churnops.store.sqlite import SQLiteStore

    s = SQLiteStore(tmp_path / "p.db")
    s.insert_predictions(
        [rec(1, 10.0), rec(2, 11.0, request_id="\ud800", _id="\ud800"), rec(3, 12.0, latency_ms=float("nan"))]
    )
    got = s.find_predictions()
    assert [r["_id"] for r in got] == ["id1", "\ud800", "id3"] and got[2][
        "latency_ms"
    ] is None  # orjson writes NaN as null
    assert s.find_predictions(limit=0) == [] and s.count_predictions(11.0, 12.0) == 1


def test_factory_picks_backend(tmp_path):
    from churnops.settings import Settings
    from churnops.store.factory import open_store
    from churnops.store.mongo import MongoStore
    from churnops.store.sqlite import SQLiteStore

    s = Settings(_env_file=None, state_dir=tmp_path)
    st = open_store(s)
    assert isinstance(st, SQLiteStore) and st.path == tmp_path / "predictions.db"
    m = open_store(Settings(_env_file=None, state_dir=tmp_path, mongodb_uri="mongodb://127.0.0.1:9/"))
    assert isinstance(m, MongoStore)
    m.close()


def test_feedback_newest_ts_wins_whatever_the_order(store):
    """Item 13: an older outcome written after a newer one (a replayed spool) does not replace it."""
    store.add_feedback("r1", 0, 200.0)
    store.add_feedback("r1", 1, 100.0)  # older, arrives later
    store.add_feedback_many(
        [
            {"request_id": "r2", "outcome": 1, "ts": 50.0},
            {"request_id": "r2", "outcome": 0, "ts": 60.0},
            {"request_id": "r3", "outcome": 1, "ts": 70.0},
        ]
    )
    store.add_feedback_many(
        [
            {"request_id": "r2", "outcome": 1, "ts": 55.0},  # stale
            {"request_id": "r3", "outcome": 0, "ts": 70.0},
        ]
    )  # same ts: the later write
    got = {f["request_id"]: (f["outcome"], f["ts"]) for f in store.find_feedback()}
    assert got == {"r1": (0, 200.0), "r2": (0, 60.0), "r3": (0, 70.0)}


def test_a_reused_request_id_keeps_every_entry(store):
    """Item 14: entries are keyed by their own `_id`; request_id is a field several entries share."""
    store.insert_predictions([rec(1, 10.0, _id="e1", request_id="same"), rec(2, 11.0, _id="e2", request_id="same")])
    store.insert_batch(batch_of([3], 12.0))
    got = [r for r in store.find_predictions() if r["request_id"] == "same"]
    assert [r["_id"] for r in got] == ["e1", "e2"] and [r["probability"] for r in got] == [0.01, 0.02]


def test_audit_is_append_only_newest_first_and_paged(store):
    for i in range(5):
        store.add_audit(
            {
                "actor": "ana",
                "action": "promote",
                "model": "m",
                "from_version": str(i),
                "to_version": str(i + 1),
                "reason": f"r{i}",
                "ts": 1000.0 + i,
                "rules": [{"name": "x", "passed": True}],
            }
        )
    page1, page2 = store.find_audit(limit=2), store.find_audit(limit=2, offset=2)
    assert [r["reason"] for r in page1] == ["r4", "r3"]
    assert [r["reason"] for r in page2] == ["r2", "r1"]
    assert page1[0]["rules"] == [{"name": "x", "passed": True}] and page1[0]["actor"] == "ana"
    assert len(store.find_audit(limit=50)) == 5


def test_sqlite_audit_records_cannot_be_changed(tmp_path):
    import sqlite3

    from churnops.store.sqlite import SQLiteStore

    s = SQLiteStore(tmp_path / "p.db")
    rec = s.add_audit({"actor": "ana", "action": "rollback", "reason": "bad"})
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        s._run(lambda c: c.execute("UPDATE audit SET doc = '{}' WHERE _id = ?", (rec["_id"],)))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        s._run(lambda c: c.execute("DELETE FROM audit"))
    assert s.find_audit()[0]["reason"] == "bad"
