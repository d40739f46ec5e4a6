"""Which store errors quarantine records and which only spool them; the quarantine itself (0600,
fsync'ed, capped, counted, replayable by `make replay-quarantine`)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import mongomock
import pytest
from prometheus_client import CollectorRegistry
from pymongo.errors import OperationFailure

from churnops.store.mongo import MongoStore
from churnops.store.sqlite import SQLiteStore
from serving.metrics import Metrics
from serving.prediction_log import PredictionLog
from tests.support.serving import rec

ROOT = Path(__file__).resolve().parents[2]


class _FailingCollection:
    """A mongomock collection whose writes raise `exc` while `state["exc"]` is set (counted)."""

    def __init__(self, coll, state: dict):
        self._coll, self._state = coll, state

    def _write(self, name, *a, **kw):
        self._state["calls"] += 1
        if self._state["exc"] is not None:
            raise self._state["exc"]
        return getattr(self._coll, name)(*a, **kw)

    def insert_many(self, *a, **kw):
        return self._write("insert_many", *a, **kw)

    def update_one(self, *a, **kw):
        return self._write("update_one", *a, **kw)

    def __getattr__(self, name):
        return getattr(self._coll, name)


class _FailingDB:
    def __init__(self, db, state: dict):
        self._db, self._state = db, state

    def __getattr__(self, name):
        return _FailingCollection(getattr(self._db, name), self._state)


def failing_mongo(exc: Exception) -> tuple[MongoStore, dict]:
    """The real MongoStore on mongomock, its driver raising `exc` on every write (pymongo's own error)."""
    store = MongoStore(mongomock.MongoClient(), "churn")
    store.label = "MongoDB mongodb://churn:s3cret@db.internal:27017"  # what from_uri names it (redacted on show)
    state = {"exc": exc, "calls": 0}
    store.db = _FailingDB(store.db, state)
    return store, state


class _SQLiteCalls(SQLiteStore):
    """SQLiteStore counting the chunk writes that reach SQLite."""

    calls = 0

    def _insert_chunk(self, *a, **kw):
        self.calls += 1
        return super()._insert_chunk(*a, **kw)


def malformed_sqlite(tmp_path: Path) -> tuple[_SQLiteCalls, Path, Path]:
    """A real SQLite file whose pages were overwritten: inserts fail with 'database disk image is
    malformed' (sqlite3.DatabaseError) while `SELECT 1` (the store's ping) still answers. Returns the
    store, the file and an intact copy of it."""
    db = tmp_path / "p.db"
    seed = SQLiteStore(db)
    seed.insert_predictions([rec(1000 + i) | {"features": {"pad": "x" * 3000}} for i in range(40)])
    seed.close()
    good = tmp_path / "good.db"
    shutil.copy(db, good)
    size = db.stat().st_size
    with open(db, "r+b") as fh:
        for page in range(1, size // 65536):
            fh.seek(page * 65536)
            fh.write(b"\xff" * 100)
    return _SQLiteCalls(db), db, good


STORE_FAILURES = ["mongo-auth-18", "mongo-unauthorized-13", "mongo-disk-full-14031", "sqlite-malformed"]


@pytest.mark.parametrize("case", STORE_FAILURES)
def test_store_failure_spools_and_degrades_without_quarantine_or_bisection(tmp_path, case):
    """A store refusing the credentials, out of disk or corrupt is not the records' fault: each write is
    ONE store call (no bisection), nothing is quarantined or counted as written, the records are spooled,
    /health is degraded naming the store and the error (password redacted), and they all reach the
    store once it works again."""
    if case == "sqlite-malformed":
        store, db, good = malformed_sqlite(tmp_path)
        calls = lambda: store.calls  # noqa: E731
    else:
        code = int(case.rsplit("-", 1)[1])
        store, state = failing_mongo(OperationFailure(f"simulated server error {code}", code=code))
        calls = lambda: state["calls"]  # noqa: E731
    metrics = Metrics(CollectorRegistry())
    plog = PredictionLog(store, tmp_path / "spool", batch_size=16, replay_interval_s=3600, metrics=metrics)
    for i in range(3):  # three writes of 16 records; the 2nd and 3rd fall in the backoff: not tried
        plog.write_now([rec(16 * i + k) for k in range(16)])
    assert calls() == 1  # the old code bisected all 16 records: 31 calls, then quarantined them
    assert plog.quarantined == 0 and not (tmp_path / "spool" / "quarantine").exists()
    assert plog.written == 0 and plog.spooled == 48 and plog.dropped == 0
    assert metrics.log_records.labels("quarantined")._value.get() == 0
    assert metrics.log_records.labels("spooled")._value.get() == 48
    st = plog.status()
    assert st["degraded"] == ["store"] and not st["store_ok"] and st["quarantine_files"] == 0
    if case == "sqlite-malformed":
        assert st["store"] == f"SQLite {db}" and "DatabaseError" in st["store_error"]
        assert "malformed" in st["store_error"]
        store.close()
        shutil.copy(good, db)  # the file restored from a backup
        target = SQLiteStore(db)
    else:
        assert st["store"] == "MongoDB mongodb://***@db.internal:27017" and "s3cret" not in json.dumps(st)
        assert st["store_error"].startswith(f"OperationFailure: code {code}")
        state["exc"] = None  # credentials fixed
        target = store
    assert PredictionLog(target, tmp_path / "spool").replay() == 48
    ids = {r["_id"] for r in target.find_predictions()}
    assert {f"p{i}" for i in range(48)} <= ids


class _SmallRows(SQLiteStore):
    """SQLiteStore whose connections refuse any value over `limit` bytes (SQLITE_LIMIT_LENGTH): a chunk
    holding one oversized record fails with sqlite3.DataError ('string or blob too big')."""

    limit = 20_000

    def _connect(self):
        fresh = self._conn is None
        conn = super()._connect()
        if fresh:
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.limit)
        return conn


def big(i: int) -> dict:
    return rec(i) | {"features": {"blob": "z" * 30_000}}


def test_a_record_error_quarantines_only_that_record_in_a_0600_fsynced_file(tmp_path, monkeypatch):
    """A row SQLite refuses for its size (DataError, a real SQLite limit) is bisected out alone: the
    others are stored and counted as written, the store stays ok, and the quarantine file is 0600 in a
    0700 folder, fsync'ed (file and folder), counted in the metric and in /health."""
    fsynced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        fsynced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    metrics = Metrics(CollectorRegistry())
    store = _SmallRows(tmp_path / "p.db")
    plog = PredictionLog(store, tmp_path / "spool", batch_size=100, metrics=metrics)
    res = plog.write_now([rec(i) for i in range(10)] + [big(10)] + [rec(i) for i in range(11, 20)])
    assert (res.stored, res.quarantined, res.dropped) == (19, 1, 0) and res.kept
    assert plog.written == 19 and plog.quarantined == 1 and plog.store_ok
    assert sorted(r["_id"] for r in store.find_predictions()) == sorted(f"p{i}" for i in range(20) if i != 10)
    qdir = tmp_path / "spool" / "quarantine"
    (q,) = qdir.iterdir()
    assert stat.S_IMODE(q.stat().st_mode) == 0o600 and stat.S_IMODE(qdir.stat().st_mode) == 0o700
    (line,) = q.read_text().splitlines()
    assert json.loads(line)["record"]["_id"] == "p10" and "DataError" in json.loads(line)["error"]
    assert fsynced.count("file") >= 1 and fsynced[-1] == "dir"
    assert metrics.log_records.labels("quarantined")._value.get() == 1
    st = plog.status()
    assert st["degraded"] == [] and st["quarantined"] == 1 and st["quarantine_files"] == 1
    assert st["quarantine_bytes"] == q.stat().st_size


def test_the_quarantine_is_capped_and_what_does_not_fit_is_counted_as_dropped(tmp_path):
    """Its own cap (`quarantine_max_bytes`): records refused beyond it are dropped and counted
    (/health degraded), never written past the cap."""
    store = _SmallRows(tmp_path / "p.db")
    plog = PredictionLog(store, tmp_path / "spool", batch_size=100, quarantine_max_bytes=70_000)
    res = plog.write_now([big(i) for i in range(5)] + [rec(i) for i in range(5, 8)])
    qdir = tmp_path / "spool" / "quarantine"
    used = sum(p.stat().st_size for p in qdir.iterdir())
    assert res.stored == 3 and res.quarantined + res.dropped == 5 and res.dropped >= 3 and not res.kept
    assert used <= 70_000 and plog.quarantined == res.quarantined == 2 and len(list(qdir.iterdir())) == 1
    st = plog.status()
    assert "dropped" in st["degraded"] and st["dropped"] == res.dropped and st["quarantine_bytes"] == used


def test_the_quarantine_counts_inside_the_spool_cap(tmp_path):
    """The spool folder's total cap (SPOOL_MAX_BYTES) includes the quarantine."""
    store = _SmallRows(tmp_path / "p.db")
    plog = PredictionLog(store, tmp_path / "spool", spool_max_bytes=100_000, quarantine_max_bytes=1 << 30)
    plog.write_now([big(i) for i in range(5)])
    plog.replay()  # rescans the folder
    assert plog.quarantined in (2, 3) and plog.dropped == 5 - plog.quarantined
    assert plog.status()["spool_bytes"] == plog.status()["quarantine_bytes"] <= 100_000


def test_replay_quarantine_puts_records_back_and_keeps_those_still_refused(tmp_path):
    """`make replay-quarantine` (python -m ops.replay_quarantine): records the store takes now leave the
    quarantine and are in the store; one it still refuses (a lone surrogate in a request id) stays,
    with its reason; a line that cannot be parsed stays as it was."""
    state = tmp_path / "state"
    spool = state / "spool"
    db = state / "predictions.db"
    small = _SmallRows(db)
    plog = PredictionLog(small, spool, batch_size=100)
    plog.write_now([rec(0), big(1), big(2), ("feedback", {"request_id": "bad\ud800", "outcome": 1, "ts": 5.0})])
    assert plog.quarantined == 3 and small.count_predictions() == 1
    junk = spool / "quarantine" / "00000000000000000001-1-1.jsonl"
    junk.write_text('{"line": "{not json", "error": "unreadable"}\n')
    small.close()
    env = {**os.environ, "STATE_DIR": str(state), "ENV_FILE": str(tmp_path / "none"), "MONGODB_URI": ""}
    r = subprocess.run(
        [sys.executable, "-m", "ops.replay_quarantine"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert (out["replayed"], out["kept"]) == (2, 2)
    store = SQLiteStore(db)
    assert sorted(x["_id"] for x in store.find_predictions()) == ["p0", "p1", "p2"]
    assert store.find_feedback() == []
    left = [json.loads(x) for p in sorted((spool / "quarantine").iterdir()) for x in p.read_text().splitlines()]
    assert sorted(str(x.get("record", {}).get("request_id")) for x in left) == ["None", "bad\ud800"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (spool / "quarantine").iterdir())
    # replayed again: nothing more to take, the refused ones stay
    r2 = subprocess.run(
        [sys.executable, "-m", "ops.replay_quarantine"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert r2.returncode == 0 and json.loads(r2.stdout.strip().splitlines()[-1])["kept"] == 2
    assert "replay-quarantine:" in (ROOT / "Makefile").read_text()


def test_replay_quarantine_with_the_store_down_keeps_everything_and_fails(tmp_path):
    """A store that is unavailable during the replay (MongoDB refusing the credentials): the file is
    left as it was and the replay says the store is unavailable."""
    small = _SmallRows(tmp_path / "p.db")
    plog = PredictionLog(small, tmp_path / "spool")
    plog.write_now([big(1), rec(2)])
    (q,) = (tmp_path / "spool" / "quarantine").iterdir()
    before = q.read_bytes()
    store, state = failing_mongo(OperationFailure("Authentication failed.", code=18))
    res = PredictionLog(store, tmp_path / "spool").replay_quarantine()
    assert res.replayed == 0 and res.kept == 1 and "Authentication failed" in res.store_error
    assert q.read_bytes() == before and state["calls"] == 1
