"""Embedded prediction log: one SQLite file in WAL mode, safe for several processes at once.

Every gunicorn worker and every consumer process opens its own connection to the same file;
WAL lets readers run beside one writer and `busy_timeout` makes concurrent writers queue
instead of failing.

Predictions are stored in chunks, not one row each: every write of the prediction log (up to a
few hundred single predictions, or one batch request) is ONE row of `prediction_chunks`
(time range, count, and the records as JSON: `{"rows": [record, ...]}`, or a batch in columns
`{"batch": {"const", "cols", "features"}}`). A per-record row with its primary-key and time
indexes cost 10-18 us per prediction, more than the model; a chunk costs about 1 us per
prediction (see bench/bench_serve.py). Reads (`find_predictions`, `count_predictions`, the
`GET /logs` endpoint, the report flow) open the chunks overlapping the window and return records
oldest first, each `_id` once: the first write wins, so a stream batch re-emitted after a crash
or a spool file replayed twice never shows twice. A chunk's own `_id` is a hash of its
content, so writing the same chunk again (a replay) is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from churnops.store.base import Lease, PredictionBatch, PredictionStore
from churnops.store.base import feedback_outcome as _outcome
from churnops.store.encoding import dump_document, load_document

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prediction_chunks (
    _id TEXT NOT NULL UNIQUE, ts_min REAL NOT NULL, ts_max REAL NOT NULL, n INTEGER NOT NULL,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS prediction_chunks_ts ON prediction_chunks (ts_max, ts_min);
CREATE INDEX IF NOT EXISTS prediction_chunks_ts_min ON prediction_chunks (ts_min);
CREATE TABLE IF NOT EXISTS feedback (
    _id TEXT PRIMARY KEY, request_id TEXT NOT NULL, outcome INTEGER NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS feedback_ts ON feedback (ts);
CREATE TABLE IF NOT EXISTS checkpoints (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reports (_id TEXT PRIMARY KEY, ts REAL NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS reports_ts ON reports (ts);
"""

# the audit trail: append-only (the triggers refuse updates and deletes); created on first use
_AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, _id TEXT NOT NULL UNIQUE, ts REAL NOT NULL, doc TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
"""

# counts of rejected records per minute, source, reason and field (churnops/monitoring/rejections.py)
_REJECTIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS rejections (
    ts REAL NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL, field TEXT NOT NULL, n INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS rejections_ts ON rejections (ts);
"""


# shard leases of the stream consumers (churnops.store.base.Lease); created on first use
_LEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY, owner TEXT, counter INTEGER NOT NULL, expires REAL NOT NULL, checkpoint TEXT,
    seq TEXT NOT NULL, parents TEXT NOT NULL, pending_owner TEXT);
"""
_LEASE_COLUMNS = "key, owner, counter, expires, checkpoint, seq, parents, pending_owner"


def _lease(row) -> Lease:
    key, owner, counter, expires, checkpoint, seq, parents, pending = row
    return Lease(key, owner, int(counter), float(expires), checkpoint, seq, json.loads(parents), pending)


def _chunk_records(doc: dict) -> list[dict]:
    if "rows" in doc:
        return doc["rows"]
    batch = doc["batch"]
    cols = batch["cols"]
    if "request_id" not in cols:  # written once when it equals `_id` (see insert_batch)
        cols["request_id"] = cols["_id"]
    return PredictionBatch.from_doc(batch).rows()


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
            conn = sqlite3.connect(
                str(self.path), timeout=self.timeout_s, check_same_thread=False, isolation_level=None
            )
            deadline = time.monotonic() + self.timeout_s
            while True:  # several processes may open a fresh file at once: retry the setup
                try:
                    conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
                    # a new file only (ignored afterwards): 64 KiB pages write a 300 KB chunk in a
                    # third of the time 4 KiB pages take (fewer overflow pages and WAL frames)
                    conn.execute("PRAGMA page_size=65536")
                    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    if (
                        conn.execute(
                            "SELECT COUNT(*) FROM sqlite_master WHERE name='prediction_chunks_ts_min'"
                        ).fetchone()[0]
                        == 0
                    ):
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
    def _insert_chunk(self, doc: bytes, ts_min: float, ts_max: float, n: int, key: bytes | None = None) -> int:
        """One chunk row; its `_id` is a hash of the content (or of `key`, which must identify the
        content), so the same chunk twice is stored once."""
        chunk_id = f"{n}-{hashlib.blake2b(doc if key is None else key, digest_size=16).hexdigest()}"
        text = doc.decode()

        def go(conn):
            cur = conn.execute(
                "INSERT INTO prediction_chunks (_id, ts_min, ts_max, n, doc) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(_id) DO NOTHING",
                (chunk_id, ts_min, ts_max, n, text),
            )
            return n if cur.rowcount == 1 else 0

        return self._run(go)

    def encode_prediction(self, record: dict) -> tuple[float, bytes]:
        """(ts, JSON bytes) of a record: the prediction log encodes in the request thread, so its
        writer thread only joins bytes (short GIL holds: long ones stalled requests)."""
        return float(record["ts"]), dump_document(record)

    def insert_encoded(self, items: list[tuple[float, bytes]]) -> int:
        """One chunk of records encoded by `encode_prediction`; returns how many were written."""
        if not items:
            return 0
        ts = [t for t, _ in items]
        return self._insert_chunk(b'{"rows":[' + b",".join([b for _, b in items]) + b"]}", min(ts), max(ts), len(items))

    def insert_predictions(self, records: list[dict]) -> int:
        """One chunk of record dicts; returns how many were written (0 when this chunk was already)."""
        return self.insert_encoded([self.encode_prediction(r) for r in records])

    @staticmethod
    def _span(batch: PredictionBatch) -> tuple[float, float]:
        ts = batch.cols.get("ts")
        return (float(batch.const["ts"]),) * 2 if ts is None else (float(min(ts)), float(max(ts)))

    def encode_batch(self, batch: PredictionBatch) -> bytes:
        """JSON of a batch's columns (`{"const", "cols", "features"}`): the prediction log encodes it
        once in the request thread, for its journal and for `insert_encoded_batch`."""
        return dump_document({"const": batch.const, "cols": batch.cols, "features": batch.features})

    def insert_encoded_batch(self, batch: PredictionBatch, doc: bytes) -> int:
        """`insert_batch` with the columns already encoded by `encode_batch` (same chunk id)."""
        if batch.n == 0:
            return 0
        lo, hi = self._span(batch)
        key = dump_document(["batch", lo, hi, batch.cols["_id"]])
        return self._insert_chunk(b'{"batch":' + doc + b"}", lo, hi, batch.n, key)

    def insert_batch(self, batch: PredictionBatch) -> int:
        """One chunk in columns: no per-record dicts are built on the write path."""
        if batch.n == 0:
            return 0
        lo, hi = self._span(batch)
        cols = batch.cols
        if cols.get("request_id") is cols["_id"]:  # HTTP batches: the same list twice, stored once
            cols = {k: v for k, v in cols.items() if k != "request_id"}
        doc = dump_document({"batch": {"const": batch.const, "cols": cols, "features": batch.features}})
        # the chunk's identity: its time span and record ids as JSON (unambiguous whatever the ids
        # hold; records are first-write-wins by id), a fifth of the bytes of the document
        key = dump_document(["batch", lo, hi, batch.cols["_id"]])
        return self._insert_chunk(doc, lo, hi, batch.n, key)

    def _records(self, start, end, limit=None) -> list[dict]:
        """Records with start <= ts < end, sorted by (ts, _id), each `_id` once (first write wins)."""
        clauses, args = [], []
        if start is not None:
            clauses.append("ts_max >= ?")
            args.append(float(start))
        if end is not None:
            clauses.append("ts_min < ?")
            args.append(float(end))
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        # chunk ids in ts_min order from the indexes; each chunk's document is read only when needed
        sql = f"SELECT rowid, ts_min FROM prediction_chunks{where} ORDER BY ts_min, rowid"
        lo = float("-inf") if start is None else float(start)
        hi = float("inf") if end is None else float(end)
        if limit is not None and limit <= 0:
            return []

        def go(conn):
            best: dict[str, tuple[int, dict]] = {}
            for rowid, ts_min in conn.execute(sql, args).fetchall():
                if limit is not None and len(best) >= limit:
                    # chunks come by ts_min: stop once no later chunk can hold one of the first `limit`
                    cut = sorted(best.values(), key=lambda x: (x[1]["ts"], str(x[1]["_id"])))[limit - 1][1]["ts"]
                    if ts_min > cut:
                        break
                (text,) = conn.execute("SELECT doc FROM prediction_chunks WHERE rowid = ?", (rowid,)).fetchone()
                for r in _chunk_records(load_document(text)):
                    if lo <= r["ts"] < hi:
                        key = str(r["_id"])
                        prev = best.get(key)
                        if prev is None or rowid < prev[0]:
                            best[key] = (rowid, r)
            return best

        best = self._run(go)
        out = sorted((r for _, r in best.values()), key=lambda r: (r["ts"], str(r["_id"])))
        return out if limit is None else out[:limit]

    def find_predictions(self, start=None, end=None, limit=None) -> list[dict]:
        return self._records(start, end, None if limit is None else int(limit))

    def count_predictions(self, start=None, end=None) -> int:
        return len(self._records(start, end))

    # ---- feedback ---------------------------------------------------------------------------------
    def add_feedback(self, request_id: str, outcome: int, ts: float) -> None:
        self._run(
            lambda c: c.execute(
                "INSERT INTO feedback (_id, request_id, outcome, ts) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(_id) DO UPDATE SET outcome=excluded.outcome, ts=excluded.ts "
                "WHERE excluded.ts >= feedback.ts",
                (str(request_id), str(request_id), _outcome(outcome), float(ts)),
            )
        )

    def add_feedback_many(self, items: list[dict]) -> None:
        """Several feedback records in one transaction (64 KiB pages make one per record costly)."""
        rows = [(str(f["request_id"]), str(f["request_id"]), _outcome(f["outcome"]), float(f["ts"])) for f in items]
        if not rows:
            return

        def go(conn):
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO feedback (_id, request_id, outcome, ts) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(_id) DO UPDATE SET outcome=excluded.outcome, ts=excluded.ts "
                    "WHERE excluded.ts >= feedback.ts",
                    rows,
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        self._run(go)

    def find_feedback(self, request_ids=None, start=None, end=None) -> list[dict]:
        where, args = _window(start, end)
        if request_ids is not None:
            ids = [str(r) for r in request_ids]
            if not ids:
                return []
            # `_id` is the request_id (one feedback per request): the primary key's index serves it
            where += (" AND " if where else " WHERE ") + f"_id IN ({','.join('?' * len(ids))})"
            args += ids
        sql = f"SELECT _id, request_id, outcome, ts FROM feedback{where} ORDER BY ts, _id"
        return self._run(
            lambda c: [
                {"_id": i, "request_id": r, "outcome": _outcome(o), "ts": t}
                for i, r, o, t in c.execute(sql, args).fetchall()
            ]
        )

    # ---- checkpoints and reports --------------------------------------------------------------------
    def get_checkpoint(self, key: str) -> str | None:
        row = self._run(lambda c: c.execute("SELECT value FROM checkpoints WHERE key = ?", (key,)).fetchone())
        return row[0] if row else None

    def set_checkpoint(self, key: str, value: str) -> None:
        self._run(
            lambda c: c.execute(
                "INSERT INTO checkpoints (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, str(value)),
            )
        )

    # ---- shard leases ---------------------------------------------------------------------------------
    def _lease_table(self, conn: sqlite3.Connection) -> None:
        if not getattr(self, "_leases_ready", False):
            conn.executescript(_LEASE_SCHEMA)
            self._leases_ready = True

    def _leases(self, fn):
        def go(conn):
            self._lease_table(conn)
            return fn(conn)

        return self._run(go)

    def create_lease(self, lease: Lease) -> bool:
        d = lease.to_doc()
        return self._leases(
            lambda c: (
                c.execute(
                    f"INSERT INTO leases ({_LEASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING",
                    (
                        d["_id"],
                        d["owner"],
                        d["counter"],
                        d["expires"],
                        d["checkpoint"],
                        d["seq"],
                        json.dumps(d["parents"]),
                        d["pending_owner"],
                    ),
                ).rowcount
                == 1
            )
        )

    def get_lease(self, key: str) -> Lease | None:
        row = self._leases(lambda c: c.execute(f"SELECT {_LEASE_COLUMNS} FROM leases WHERE key = ?", (key,)).fetchone())
        return _lease(row) if row else None

    def list_leases(self, prefix: str) -> list[Lease]:
        rows = self._leases(
            lambda c: c.execute(
                f"SELECT {_LEASE_COLUMNS} FROM leases WHERE substr(key, 1, ?) = ? ORDER BY key", (len(prefix), prefix)
            ).fetchall()
        )
        return [_lease(r) for r in rows]

    def cas_lease(self, key, counter, owner, expires, pending_owner, bump) -> bool:
        return self._leases(
            lambda c: (
                c.execute(
                    "UPDATE leases SET owner = ?, expires = ?, pending_owner = ?, counter = counter + ? "
                    "WHERE key = ? AND counter = ?",
                    (owner, float(expires), pending_owner, 1 if bump else 0, key, int(counter)),
                ).rowcount
                == 1
            )
        )

    def checkpoint_lease(self, key, owner, counter, checkpoint, seq, backwards_ok=False) -> bool:
        return self._leases(
            lambda c: (
                c.execute(
                    "UPDATE leases SET checkpoint = ?, seq = ? WHERE key = ? AND owner = ? AND counter = ? "
                    "AND (seq <= ? OR ?)",
                    (checkpoint, seq, key, owner, int(counter), seq, 1 if backwards_ok else 0),
                ).rowcount
                == 1
            )
        )

    def save_report(self, meta: dict) -> None:
        doc = json.dumps(meta, default=str)
        self._run(
            lambda c: c.execute(
                "INSERT INTO reports (_id, ts, doc) VALUES (?, ?, ?) "
                "ON CONFLICT(_id) DO UPDATE SET ts=excluded.ts, doc=excluded.doc",
                (str(meta["_id"]), float(meta.get("ts", 0.0)), doc),
            )
        )

    def list_reports(self, limit: int = 100) -> list[dict]:
        return self._run(
            lambda c: [
                json.loads(d)
                for (d,) in c.execute(
                    "SELECT doc FROM reports ORDER BY ts DESC, _id DESC LIMIT ?", (int(limit),)
                ).fetchall()
            ]
        )

    def is_record_error(self, exc: BaseException) -> bool:
        """A row's data: too big (DataError, SQLITE_TOOBIG), a constraint or type mismatch of that
        row (IntegrityError), or an encoding error of a record. Not: locked, busy, disk full,
        cannot open (OperationalError), "database disk image is malformed" (DatabaseError),
        out of memory, internal errors: the file, not the records."""
        return isinstance(exc, (sqlite3.DataError, sqlite3.IntegrityError)) or super().is_record_error(exc)

    def describe(self) -> str:
        return f"SQLite {self.path}"

    # ---- audit ------------------------------------------------------------------------------------
    def _audit_table(self, conn: sqlite3.Connection) -> None:
        if not getattr(self, "_audit_ready", False):
            conn.executescript(_AUDIT_SCHEMA)
            self._audit_ready = True

    def add_audit(self, record: dict) -> dict:
        rec = {
            **record,
            "_id": str(record.get("_id") or uuid.uuid4().hex),
            "ts": float(record.get("ts") or time.time()),
        }

        def go(conn):
            self._audit_table(conn)
            cur = conn.execute(
                "INSERT INTO audit (_id, ts, doc) VALUES (?, ?, ?)",
                (rec["_id"], rec["ts"], json.dumps(rec, default=str)),
            )
            return cur.lastrowid

        rec["seq"] = int(self._run(go))
        return rec

    def find_audit(self, limit: int = 50, offset: int = 0, model: str | None = None) -> list[dict]:
        where, args = ("", ()) if model is None else ("WHERE json_extract(doc, '$.model') = ? ", (str(model),))

        def go(conn):
            self._audit_table(conn)
            return [
                dict(json.loads(d), seq=s)
                for s, d in conn.execute(
                    f"SELECT seq, doc FROM audit {where}ORDER BY seq DESC LIMIT ? OFFSET ?",  # noqa: S608 (fixed text)
                    (*args, int(limit), int(offset)),
                ).fetchall()
            ]

        return self._run(go)

    # ---- rejection counts -------------------------------------------------------------------------
    def _rejections_table(self, conn: sqlite3.Connection) -> None:
        if not getattr(self, "_rejections_ready", False):
            conn.executescript(_REJECTIONS_SCHEMA)
            self._rejections_ready = True

    def add_rejections(self, counts: list[dict]) -> None:
        rows = [
            (float(c["ts"]), str(c["source"]), str(c["reason"]), str(c.get("field") or ""), int(c["count"]))
            for c in counts
        ]

        def go(conn):
            self._rejections_table(conn)
            conn.executemany("INSERT INTO rejections (ts, source, reason, field, n) VALUES (?, ?, ?, ?, ?)", rows)

        if rows:
            self._run(go)

    def find_rejections(self, start=None, end=None) -> list[dict]:
        where, args = _window(start, end)

        def go(conn):
            self._rejections_table(conn)
            return conn.execute(
                f"SELECT ts, source, reason, field, n FROM rejections{where} ORDER BY ts",  # noqa: S608 (fixed text)
                args,
            ).fetchall()

        return [{"ts": ts, "source": s, "reason": r, "field": f, "count": n} for ts, s, r, f, n in self._run(go)]

    def ping(self) -> bool:
        try:
            return self._run(lambda c: c.execute("SELECT 1").fetchone()[0] == 1)
        except sqlite3.Error:
            return False

    def cache_key(self) -> str:
        """Every store object on the same file reads the same data."""
        return f"sqlite:{self.path.resolve()}"

    def close(self) -> None:
        with self._lock:
            self._drop()
