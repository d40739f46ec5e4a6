"""The prediction log: off the request path, spools while the store is down, replays, loses nothing."""

from __future__ import annotations

import json
import time

import mongomock
import pytest

from serving.prediction_log import PredictionLog
from serving.store_mongo import MongoStore
from serving.store_sqlite import SQLiteStore
from tests.serving.conftest import FlakyStore, example
from tests.serving.test_app import post


def rec(i):
    return {"_id": f"p{i}", "ts": 1000.0 + i, "request_id": f"p{i}", "source": "http", "model_run_id": "r",
            "model_version": "1", "route": "champion", "features": {}, "probability": 0.1, "decision": 0,
            "latency_ms": 1.0}


@pytest.mark.parametrize("backend", ["sqlite", "mongo"])
def test_store_down_spools_and_replays_everything(tmp_path, backend):
    inner = SQLiteStore(tmp_path / "p.db") if backend == "sqlite" else MongoStore(mongomock.MongoClient())
    store = FlakyStore(inner)
    plog = PredictionLog(store, tmp_path / "spool", batch_size=7, flush_interval_s=0.02, replay_interval_s=0.0)
    plog.start()
    plog.submit_many([rec(i) for i in range(10)])
    plog.flush()
    time.sleep(0.1)
    store.down = True
    plog.submit_many([rec(i) for i in range(10, 50)])
    plog.submit_feedback("p12", 1, 5.0)
    deadline = time.monotonic() + 5
    while plog.spooled < 41 and time.monotonic() < deadline:
        time.sleep(0.02)
    plog.flush()
    assert not plog.store_ok and plog.spool_files()
    spooled = sum(len(p.read_text().splitlines()) for p in plog.spool_files())
    assert spooled == 41 and inner.count_predictions() < 50
    # a second writer sharing the spool folder; replays must not duplicate
    store.down = False
    plog.submit_many([rec(i) for i in range(45, 55)])  # overlaps spooled ids
    plog.close()
    other = PredictionLog(inner, tmp_path / "spool", replay_interval_s=0.0)
    other.replay()
    assert inner.count_predictions() == 55
    assert sorted(r["_id"] for r in inner.find_predictions()) == sorted(f"p{i}" for i in range(55))
    assert [f["outcome"] for f in inner.find_feedback(["p12"])] == [1]
    assert plog.spool_files() == []


def test_spool_file_is_complete_jsonl(tmp_path):
    store = FlakyStore(SQLiteStore(tmp_path / "p.db"))
    store.down = True
    plog = PredictionLog(store, tmp_path / "spool")
    assert plog.write_now([rec(1), rec(2)]) is False
    (f,) = plog.spool_files()
    lines = [json.loads(x) for x in f.read_text().splitlines()]
    assert [x["record"]["_id"] for x in lines] == ["p1", "p2"] and lines[0]["kind"] == "prediction"


def test_orphaned_claim_of_dead_process_is_replayed(tmp_path):
    inner = SQLiteStore(tmp_path / "p.db")
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "1-999999-1.replaying-999999").write_text(json.dumps({"kind": "prediction", "record": rec(7)}) + "\n")
    assert PredictionLog(inner, spool).replay() == 1
    assert inner.count_predictions() == 1


def test_http_requests_never_fail_while_store_down(serving_settings, bundles):
    from serving.app import create_app
    from serving.model import ModelManager
    from tests.serving.conftest import local_model_set

    inner = SQLiteStore(serving_settings.state_dir / "p.db")
    store = FlakyStore(inner)
    mm = ModelManager(serving_settings)
    mm.current = local_model_set(bundles)
    app = create_app(serving_settings, store=store, models=mm, start_background=False)
    state = app.extensions["churn"]
    state.plog.replay_interval_s = 0.0
    state.plog.start()
    c = app.test_client()
    store.down = True
    for i in range(30):
        assert post(c, "/predict", {"request_id": f"h{i}", "features": example()}).status_code == 200
    assert post(c, "/feedback", {"request_id": "h1", "outcome": 1}).status_code == 202
    time.sleep(0.3)
    state.plog.flush()
    assert c.get("/health").json["store_ok"] is False
    store.down = False
    for i in range(30, 40):
        assert post(c, "/predict", {"request_id": f"h{i}", "features": example()}).status_code == 200
    state.plog.close()
    state.plog.replay()
    assert sorted(r["request_id"] for r in inner.find_predictions()) == sorted(f"h{i}" for i in range(40))
    assert inner.find_feedback(["h1"])[0]["outcome"] == 1


def test_writer_wakes_at_wake_records_not_before(tmp_path):
    store = SQLiteStore(tmp_path / "p.db")
    plog = PredictionLog(store, tmp_path / "spool", batch_size=5, flush_interval_s=30.0, wake_records=20).start()
    time.sleep(0.05)  # the writer is waiting out its interval
    try:
        plog.submit_many([rec(i) for i in range(19)])
        time.sleep(0.3)
        assert store.count_predictions() == 0 and plog.pending() == 19  # under the threshold: no wake-up
        plog.submit(rec(19))
        deadline = time.monotonic() + 5
        while store.count_predictions() < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.count_predictions() == 20 and plog.pending() == 0
    finally:
        plog.close()
    assert PredictionLog(store, tmp_path / "spool").wake_records == 500  # default: the batch size


def test_a_spool_file_the_store_never_takes_is_quarantined_not_blocking(tmp_path):
    store = SQLiteStore(tmp_path / "p.db")
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "0001-1-1.jsonl").write_text("{not json\n")  # unreadable: set aside at once
    plog = PredictionLog(store, spool, replay_interval_s=0.0)
    plog.write_now([rec(0)])  # goes to the store, then replays the spool
    (spool / "0002-1-1.jsonl").write_text(json.dumps({"kind": "prediction", "record": rec(1)}) + "\n")
    assert plog.replay() == 1
    assert sorted(r["_id"] for r in store.find_predictions()) == ["p0", "p1"]
    assert plog.spool_files() == [] and [p.name for p in (spool / "quarantine").iterdir()] == ["0001-1-1.jsonl"]
