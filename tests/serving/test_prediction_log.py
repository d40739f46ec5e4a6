"""The prediction log: off the request path, spools while the store is down, replays, loses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import mongomock
import pytest

from churnops.store.mongo import MongoStore
from churnops.store.sqlite import SQLiteStore
from serving.prediction_log import PredictionLog, Written
from tests.support.serving import FlakyStore, example, post, rec


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
    plog.replay_interval_s, plog.retry_max_s = 3600.0, 3600.0  # no more retries while the files are counted
    time.sleep(0.1)
    plog.flush()
    assert not plog.store_ok and plog.spool_files()
    # the writer may hold one file claimed for a retry (renamed .replaying-<pid>) at this moment
    files = list((tmp_path / "spool").glob("*.jsonl")) + list((tmp_path / "spool").glob("*.replaying-*"))
    spooled = sum(len(p.read_text().splitlines()) for p in files)
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
    assert plog.write_now([rec(1), rec(2)]) == Written(spooled=2)
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
    from tests.support.serving import local_model_set

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
    assert plog.spool_files() == []
    (q,) = (spool / "quarantine").iterdir()  # the unreadable line, with the file it came from
    assert [(x["line"], x["file"]) for x in map(json.loads, q.read_text().splitlines())] == [
        ("{not json\n", "0001-1-1.jsonl")
    ]


def inner_store(backend: str, tmp_path, **kw):
    if backend == "sqlite":
        return SQLiteStore(tmp_path / "p.db", **kw)
    return MongoStore(mongomock.MongoClient())


class CountingStore(FlakyStore):
    """FlakyStore that also counts the write calls that reached it."""

    def __init__(self, inner):
        super().__init__(inner)
        self.calls = 0

    def _check(self):
        self.calls += 1
        super()._check()


@pytest.mark.parametrize("backend", ["sqlite", "mongo"])
def test_a_record_the_store_refuses_does_not_fail_its_neighbours(tmp_path, backend):
    """Item 10: one feedback whose request_id no store can hold (a lone surrogate) is isolated and
    quarantined; the other clients' feedback and predictions of the same flush are stored, and the
    store is not reported down."""
    store = inner_store(backend, tmp_path)
    plog = PredictionLog(store, tmp_path / "spool", batch_size=100, replay_interval_s=0.0)
    plog.submit_many([rec(i) for i in range(5)])
    for i in range(6):
        plog.submit_feedback(f"p{i}" if i != 3 else "bad\ud800", 1, 10.0 + i)
    plog.flush()
    assert plog.store_ok and plog.status()["degraded"] == []
    assert sorted(f["request_id"] for f in store.find_feedback()) == ["p0", "p1", "p2", "p4", "p5"]
    assert store.count_predictions() == 5 and plog.spool_files() == []
    (q,) = (tmp_path / "spool" / "quarantine").iterdir()
    (line,) = q.read_text().splitlines()
    assert json.loads(line)["record"]["request_id"] == "bad\ud800" and "Unicode" in json.loads(line)["error"]
    assert plog.quarantined == 1 and plog.dropped == 0


@pytest.mark.parametrize("backend", ["sqlite", "mongo"])
def test_replayed_old_feedback_never_overwrites_newer(tmp_path, backend):
    """Item 13: an outcome sent during an outage (spooled) and corrected after recovery: the
    correction (newer ts) stays when the spool is replayed later."""
    inner = inner_store(backend, tmp_path)
    store = FlakyStore(inner)
    plog = PredictionLog(store, tmp_path / "spool", replay_interval_s=3600)
    store.down = True
    plog.submit_feedback("c1", 1, 100.0)
    plog.flush()
    assert not plog.store_ok and len(plog.spool_files()) == 1
    store.down = False
    inner.add_feedback("c1", 0, 200.0)  # the correction, through another worker, before the replay
    assert inner.find_feedback(["c1"])[0]["outcome"] == 0
    assert plog.replay() == 1
    (fb,) = inner.find_feedback(["c1"])
    assert (fb["outcome"], fb["ts"]) == (0, 200.0)


def _lock_sqlite(path) -> subprocess.Popen:
    """Another process holding `BEGIN EXCLUSIVE` on the SQLite file until it is killed."""
    code = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep(120)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


@pytest.mark.parametrize("backend", ["sqlite-locked", "mongo-closed-port"])
def test_dead_store_bounded_queue_backoff_nothing_lost(tmp_path, backend):
    """Item 11: SQLite locked by another process / MongoDB on a closed port (short timeouts): the
    in-memory queue stays under its bound, the store is tried with backoff (not per batch), every
    record is on disk (journal -> spool), none dropped, and all reach a store that answers again."""
    from ops.localservers import free_port

    if backend == "sqlite-locked":
        SQLiteStore(tmp_path / "p.db").ping()  # create the file (WAL) before it is locked
        inner = SQLiteStore(tmp_path / "p.db", timeout_s=0.1)
        locker = _lock_sqlite(tmp_path / "p.db")
    else:
        inner = MongoStore.from_uri(f"mongodb://127.0.0.1:{free_port()}", timeout_ms=100)
        locker = None
    store = CountingStore(inner)
    plog = PredictionLog(
        store,
        tmp_path / "spool",
        batch_size=50,
        flush_interval_s=0.02,
        replay_interval_s=0.05,
        retry_max_s=0.4,
        queue_max_records=200,
    ).start()
    peak = 0
    try:
        t0 = time.monotonic()
        for i in range(3000):
            plog.submit(rec(i))
            peak = max(peak, plog.pending())
            if i % 100 == 99:
                time.sleep(0.05)
        time.sleep(0.3)
        elapsed = time.monotonic() - t0
        assert not plog.store_ok and plog.status()["degraded"] == ["store"]
        assert peak <= 200
        # backoff 0.05, 0.1, 0.2, 0.4, 0.4, ...: a handful of tries, not one per batch (60 batches)
        assert store.calls <= 6 + elapsed / 0.4, (store.calls, elapsed)
    finally:
        if locker is not None:
            locker.kill()
            locker.wait()
    if backend == "sqlite-locked":
        deadline = time.monotonic() + 15
        while inner.count_predictions() < 3000 and time.monotonic() < deadline:
            time.sleep(0.05)
        plog.close()
        target = inner
    else:
        plog.close()
        target = MongoStore(mongomock.MongoClient())  # the store is back (another server)
        PredictionLog(target, tmp_path / "spool").replay()
    assert plog.dropped == 0 and plog.spooled >= 2800
    assert sorted(r["_id"] for r in target.find_predictions()) == sorted(f"p{i}" for i in range(3000))
    assert plog.spool_files() == [] and not list((tmp_path / "spool").glob("*.journal"))


def test_spool_size_cap_counts_what_it_drops_and_keeps_the_rest(tmp_path):
    """Item 12 (spool-size cap): store down and the spool at its byte limit: records beyond it are
    counted as dropped (metric, /health status), never silently; everything else reaches the store."""
    from prometheus_client import CollectorRegistry

    from serving.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    inner = SQLiteStore(tmp_path / "p.db")
    store = FlakyStore(inner)
    store.down = True
    plog = PredictionLog(
        store,
        tmp_path / "spool",
        flush_interval_s=0.02,
        replay_interval_s=0.05,
        queue_max_records=100,
        spool_max_bytes=60_000,
        metrics=metrics,
    ).start()
    for i in range(1000):
        plog.submit(rec(i))
        if i % 100 == 99:
            time.sleep(0.05)
    plog.close()
    st = plog.status()
    assert st["spool_full"] and "dropped" in st["degraded"] and 0 < plog.dropped < 1000
    assert metrics.log_records.labels("dropped")._value.get() == plog.dropped
    assert sum(p.stat().st_size for p in (tmp_path / "spool").iterdir() if p.is_file()) <= 60_000
    store.down = False
    PredictionLog(inner, tmp_path / "spool").replay()
    assert inner.count_predictions() == 1000 - plog.dropped


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 256 KiB tmpfs (root only; the test is skipped where mounting is not permitted)."""
    d = tmp_path / "tmpfs"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_store_down_and_disk_full(tmp_path, tiny_tmpfs):
    """Item 12 on a real full file system (a 256 KiB tmpfs, ENOSPC from the kernel): what cannot be
    spooled is counted as dropped, no `.tmp` file stays, /health's status says which parts fail,
    and every record not counted as dropped reaches the store afterwards."""
    inner = SQLiteStore(tmp_path / "p.db")
    store = FlakyStore(inner)
    store.down = True
    spool = tiny_tmpfs / "spool"
    plog = PredictionLog(store, spool, flush_interval_s=0.02, replay_interval_s=0.05, queue_max_records=100).start()
    for i in range(1500):  # ~700 bytes each: about 1 MB, four times the file system
        plog.submit(rec(i))
        if i % 100 == 99:
            time.sleep(0.05)
    time.sleep(0.2)
    st = plog.status()
    assert "store" in st["degraded"] and "dropped" in st["degraded"] and not st["journal_ok"]
    plog.close()
    assert 0 < plog.dropped < 1500 and not list(spool.glob("*.tmp"))
    store.down = False
    PredictionLog(inner, spool).replay()
    assert inner.count_predictions() == 1500 - plog.dropped


def test_orphans_are_found_by_lock_not_by_pid(tmp_path):
    """Item 20: a `.replaying-<pid>` claim or a journal whose pid is alive (pid 1, our own pid:
    reused pids) but that nobody holds is replayed; one a live process holds is left alone."""
    import fcntl
    import os

    inner = SQLiteStore(tmp_path / "p.db")
    spool = tmp_path / "spool"
    spool.mkdir()
    line = lambda i: json.dumps({"kind": "prediction", "record": rec(i)}) + "\n"  # noqa: E731
    (spool / "1-1-1.replaying-1").write_text(line(1))
    (spool / f"2-{os.getpid()}-1.replaying-{os.getpid()}").write_text(line(2))
    (spool / "3-1-1.journal").write_text(line(3) + '{"kind":"prediction","rec')  # torn last line: skipped
    held = spool / "4-1-1.journal"
    held.write_text(line(4))
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a live owner
    try:
        assert PredictionLog(inner, spool).replay() == 3
        assert sorted(r["_id"] for r in inner.find_predictions()) == ["p1", "p2", "p3"]
        assert held.exists()
    finally:
        os.close(fd)
    assert PredictionLog(inner, spool).replay() == 1 and inner.count_predictions() == 4
    assert list(spool.iterdir()) == []
