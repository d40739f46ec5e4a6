"""Embedded prediction log: one SQLite file in WAL mode, safe for several processes at once.

Every gunicorn worker and every consumer process opens its own connection to the same file;
WAL lets readers run beside one writer and `busy_timeout` makes concurrent writers queue
instead of failing. Records are stored whole as JSON text (`doc`) next to the indexed columns
the queries need (`ts`), so a record reads back exactly as it was written. (No index on
`request_id`: nothing queries it, and it cost a third of the insert time.)
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from serving.store import PredictionStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    _id TEXT PRIMARY KEY, ts REAL NOT NULL, request_id TEXT, source TEXT, route TEXT,
    model_version TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
DROP INDEX IF EXISTS predictions_request_id;
CREATE TABLE IF NOT EXISTS feedback (
    _id TEXT PRIMARY KEY, request_id TEXT NOT NULL, outcome INTEGER NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS feedback_ts ON feedback (ts);
CREATE TABLE IF NOT EXISTS checkpoints (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reports (_id TEXT PRIMARY KEY, ts REAL NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS reports_ts ON reports (ts);
"""


try:  # 5-10x faster than json.dumps for the log records (a dependency of prefect)
    import orjson

    def _dumps(doc: dict) -> str:
        try:
            return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # e.g. an integer beyond 64 bits
            return json.dumps(doc, separators=(",", ":"), default=str)
except ImportError:  # pragma: no cover

    def _dumps(doc: dict) -> str:
        return json.dumps(doc, separators=(",", ":"), default=str)


def _window(start: float | None, end: float | None, column: str = "ts") -> tuple[str, list]:
    clauses, args = [], []
    if start is not None:
        clauses.append(f"{column} >= ?")
        args.append(float(start))
    if end is not None:
        clauses.append(f"{column} < ?")
        args.append(float(end))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


class SQLiteStore(PredictionStore):
    """`PredictionStore` on a SQLite file (the no-Docker default)."""

    def __init__(self, path: str | Path, timeout_s: float = 30.0):
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    # ---- connection ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=self.timeout_s, check_same_thread=False,
                                   isolation_level=None)
            deadline = time.monotonic() + self.timeout_s
            while True:  # several processes may open a fresh file at once: retry the setup
                try:
                    conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
                    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    if conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='reports_ts'").fetchone()[0] == 0:
                        conn.executescript(_SCHEMA)
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                        conn.close()
                        raise
                    time.sleep(0.05)
            self._conn = conn
        return self._conn

    def _run(self, fn):
        """Run `fn(conn)` under the lock; drop the connection on error so the next call reconnects."""
        with self._lock:
            try:
                return fn(self._connect())
            except sqlite3.Error:
                self._drop()
                raise

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    # ---- predictions ----------------------------------------------------------------------------
    def insert_predictions(self, records: list[dict]) -> int:
        rows = [
            (str(r["_id"]), float(r["ts"]), r.get("request_id"), r.get("source"), r.get("route"),
             None if r.get("model_version") is None else str(r.get("model_version")),
             _dumps(r))
            for r in records
        ]
        if not rows:
            return 0

        def go(conn):
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO predictions (_id, ts, request_id, source, route, model_version, doc) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(_id) DO NOTHING", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return conn.total_changes - before

        return self._run(go)

    def find_predictions(self, start=None, end=None, limit=None) -> list[dict]:
        where, args = _window(start, end)
        sql = f"SELECT doc FROM predictions{where} ORDER BY ts, _id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return self._run(lambda c: [json.loads(d) for (d,) in c.execute(sql, args).fetchall()])

    def count_predictions(self, start=None, end=None) -> int:
        where, args = _window(start, end)
        return self._run(lambda c: c.execute(f"SELECT COUNT(*) FROM predictions{where}", args).fetchone()[0])

    # ---- feedback ---------------------------------------------------------------------------------
    def add_feedback(self, request_id: str, outcome: int, ts: float) -> None:
        self._run(lambda c: c.execute(
            "INSERT INTO feedback (_id, request_id, outcome, ts) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(_id) DO UPDATE SET outcome=excluded.outcome, ts=excluded.ts",
            (str(request_id), str(request_id), int(outcome), float(ts))))

    def find_feedback(self, request_ids=None, start=None, end=None) -> list[dict]:
        where, args = _window(start, end)
        if request_ids is not None:
            ids = [str(r) for r in request_ids]
            if not ids:
                return []
            where += (" AND " if where else " WHERE ") + f"request_id IN ({','.join('?' * len(ids))})"
            args += ids
        sql = f"SELECT _id, request_id, outcome, ts FROM feedback{where} ORDER BY ts, _id"
        return self._run(lambda c: [
            {"_id": i, "request_id": r, "outcome": int(o), "ts": t} for i, r, o, t in c.execute(sql, args).fetchall()
        ])

    # ---- checkpoints and reports --------------------------------------------------------------------
    def get_checkpoint(self, key: str) -> str | None:
        row = self._run(lambda c: c.execute("SELECT value FROM checkpoints WHERE key = ?", (key,)).fetchone())
        return row[0] if row else None

    def set_checkpoint(self, key: str, value: str) -> None:
        self._run(lambda c: c.execute(
            "INSERT INTO checkpoints (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, str(value))))

    def save_report(self, meta: dict) -> None:
        doc = json.dumps(meta, default=str)
        self._run(lambda c: c.execute(
            "INSERT INTO reports (_id, ts, doc) VALUES (?, ?, ?) "
            "ON CONFLICT(_id) DO UPDATE SET ts=excluded.ts, doc=excluded.doc",
            (str(meta["_id"]), float(meta.get("ts", 0.0)), doc)))

    def list_reports(self, limit: int = 100) -> list[dict]:
        return self._run(lambda c: [json.loads(d) for (d,) in c.execute(
            "SELECT doc FROM reports ORDER BY ts DESC, _id DESC LIMIT ?", (int(limit),)).fetchall()])

    def ping(self) -> bool:
        try:
            return self._run(lambda c: c.execute("SELECT 1").fetchone()[0] == 1)
        except sqlite3.Error:
            return False

    def close(self) -> None:
        with self._lock:
            self._drop()
