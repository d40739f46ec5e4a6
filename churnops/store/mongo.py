"""Prediction log on MongoDB (Compose / cluster mode), via pymongo. Tested on mongomock."""

from __future__ import annotations

import re
import time
import uuid

from churnops.redact import redact
from churnops.store.base import Lease, PredictionStore
from churnops.store.base import feedback_outcome as _outcome

# write-error codes about the document written, not the server: duplicate key (11000, 11001,
# 12582), document validation (121), document too large (10334, 17419, 17420), bad value (2),
# field names ($-prefixed 52, empty 56, dotted 57), key too long (17280), invalid BSON (22)
RECORD_CODES = frozenset({2, 22, 52, 56, 57, 121, 10334, 11000, 11001, 12582, 17280, 17419, 17420})


def _window(start, end) -> dict:
    q: dict = {}
    if start is not None:
        q["$gte"] = float(start)
    if end is not None:
        q["$lt"] = float(end)
    return {"ts": q} if q else {}


class MongoStore(PredictionStore):
    """`PredictionStore` on a MongoDB database (collections: predictions, feedback, checkpoints, reports)."""

    def __init__(self, client, db: str = "churn", label: str | None = None):
        self.client = client
        self.db = client[db]
        self.label = label or f"MongoDB database {db}"
        self._indexed = False

    @classmethod
    def from_uri(cls, uri: str, db: str = "churn", timeout_ms: int = 3000) -> "MongoStore":
        from pymongo import MongoClient

        return cls(
            MongoClient(
                uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, socketTimeoutMS=10 * timeout_ms
            ),
            db,
            f"MongoDB {redact(uri)} database {db}",
        )

    def _ensure_indexes(self) -> None:
        if not self._indexed:
            self.db.predictions.create_index("ts")
            self.db.predictions.create_index("request_id")
            self.db.feedback.create_index("ts")
            self.db.feedback.create_index("request_id")
            self.db.reports.create_index("ts")
            self.db.rejections.create_index("ts")
            self._indexed = True

    def insert_predictions(self, records: list[dict]) -> int:
        """insert_many(ordered=False): duplicates of an existing `_id` are skipped (first write wins)."""
        from pymongo.errors import BulkWriteError

        if not records:
            return 0
        self._ensure_indexes()
        docs = [{**r, "_id": str(r["_id"])} for r in records]
        try:
            return len(self.db.predictions.insert_many(docs, ordered=False).inserted_ids)
        except BulkWriteError as exc:
            errs = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errs):
                raise
            return int(exc.details.get("nInserted", len(docs) - len(errs)))

    def find_predictions(self, start=None, end=None, limit=None) -> list[dict]:
        cur = self.db.predictions.find(_window(start, end)).sort([("ts", 1), ("_id", 1)])
        if limit is not None:
            cur = cur.limit(int(limit))
        return list(cur)

    def count_predictions(self, start=None, end=None) -> int:
        return int(self.db.predictions.count_documents(_window(start, end)))

    def add_feedback(self, request_id: str, outcome: int, ts: float) -> None:
        self.add_feedback_many([{"request_id": request_id, "outcome": outcome, "ts": ts}])

    def add_feedback_many(self, items: list[dict]) -> None:
        """Upserts that match only a stored record not newer than the new one (`ts` $lte): for a
        newer stored record the upsert's insert hits the existing `_id` (duplicate key, ignored),
        so the newest outcome wins whatever order the writes come in."""
        from pymongo.errors import DuplicateKeyError

        if not items:
            return
        self._ensure_indexes()
        for f in items:
            rid, ts = str(f["request_id"]), float(f["ts"])
            try:
                self.db.feedback.update_one(
                    {"_id": rid, "ts": {"$lte": ts}},
                    {"$set": {"request_id": rid, "outcome": _outcome(f["outcome"]), "ts": ts}},
                    upsert=True,
                )
            except DuplicateKeyError:
                pass  # a newer outcome is stored

    def find_feedback(self, request_ids=None, start=None, end=None) -> list[dict]:
        q = _window(start, end)
        if request_ids is not None:
            q["request_id"] = {"$in": [str(r) for r in request_ids]}
        return list(self.db.feedback.find(q).sort([("ts", 1), ("_id", 1)]))

    def get_checkpoint(self, key: str) -> str | None:
        doc = self.db.checkpoints.find_one({"_id": key})
        return None if doc is None else doc["value"]

    def set_checkpoint(self, key: str, value: str) -> None:
        self.db.checkpoints.replace_one({"_id": key}, {"_id": key, "value": str(value)}, upsert=True)

    # ---- shard leases: one document per shard in `leases`, updated with conditional update_one ----------
    def create_lease(self, lease: Lease) -> bool:
        from pymongo.errors import DuplicateKeyError

        try:
            self.db.leases.insert_one(lease.to_doc())
            return True
        except DuplicateKeyError:
            return False

    def get_lease(self, key: str) -> Lease | None:
        doc = self.db.leases.find_one({"_id": key})
        return None if doc is None else Lease.from_doc(doc)

    def list_leases(self, prefix: str) -> list[Lease]:
        docs = self.db.leases.find({"_id": {"$regex": "^" + re.escape(prefix)}}).sort("_id", 1)
        return [Lease.from_doc(d) for d in docs]

    def cas_lease(self, key, counter, owner, expires, pending_owner, bump) -> bool:
        update: dict = {"$set": {"owner": owner, "expires": float(expires), "pending_owner": pending_owner}}
        if bump:
            update["$inc"] = {"counter": 1}
        return self.db.leases.update_one({"_id": key, "counter": int(counter)}, update).matched_count == 1

    def checkpoint_lease(self, key, owner, counter, checkpoint, seq, backwards_ok=False) -> bool:
        query = {"_id": key, "owner": owner, "counter": int(counter)}
        if not backwards_ok:
            query["seq"] = {"$lte": seq}
        res = self.db.leases.update_one(
            query,
            {"$set": {"checkpoint": checkpoint, "seq": seq}},
        )
        return res.matched_count == 1

    def save_report(self, meta: dict) -> None:
        self._ensure_indexes()
        self.db.reports.replace_one({"_id": meta["_id"]}, dict(meta), upsert=True)

    def list_reports(self, limit: int = 100) -> list[dict]:
        return list(self.db.reports.find({}).sort([("ts", -1), ("_id", -1)]).limit(int(limit)))

    def is_record_error(self, exc: BaseException) -> bool:
        """A document that cannot be encoded (bson.errors.BSONError: InvalidDocument, a lone
        surrogate, DocumentTooLarge) or write errors whose every code is about the document
        (`RECORD_CODES`). Not: OperationFailure in general (auth 18/13, disk full 14031, not
        primary, interrupted...), connection failures, timeouts, or write errors with other codes:
        the server, not the records."""
        from bson.errors import BSONError
        from pymongo.errors import BulkWriteError, ConnectionFailure, DocumentTooLarge, WriteError

        if isinstance(exc, ConnectionFailure):
            return False
        if isinstance(exc, (BSONError, DocumentTooLarge)):
            return True
        if isinstance(exc, BulkWriteError):
            errs = (exc.details or {}).get("writeErrors") or []
            concerns = (exc.details or {}).get("writeConcernErrors") or []
            return bool(errs) and not concerns and all(e.get("code") in RECORD_CODES for e in errs)
        if isinstance(exc, WriteError):
            return exc.code in RECORD_CODES
        return super().is_record_error(exc)

    def describe(self) -> str:
        return self.label

    def add_audit(self, record: dict) -> dict:
        """Insert only (an `_id` already present is an error, never an overwrite)."""
        ts = float(record.get("ts") or time.time())
        rec = {**record, "_id": str(record.get("_id") or f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"), "ts": ts}
        self.db.audit.insert_one(dict(rec))
        return rec

    def add_rejections(self, counts: list[dict]) -> None:
        docs = [
            {
                "ts": float(c["ts"]),
                "source": str(c["source"]),
                "reason": str(c["reason"]),
                "field": str(c.get("field") or ""),
                "count": int(c["count"]),
            }
            for c in counts
        ]
        if docs:
            self.db.rejections.insert_many(docs, ordered=False)

    def find_rejections(self, start=None, end=None) -> list[dict]:
        q: dict = {}
        if start is not None:
            q.setdefault("ts", {})["$gte"] = float(start)
        if end is not None:
            q.setdefault("ts", {})["$lt"] = float(end)
        return list(self.db.rejections.find(q, {"_id": 0}).sort("ts", 1))

    def find_audit(self, limit: int = 50, offset: int = 0, model: str | None = None) -> list[dict]:
        cur = (
            self.db.audit.find({} if model is None else {"model": model})
            .sort([("ts", -1), ("_id", -1)])
            .skip(int(offset))
            .limit(int(limit))
        )
        return list(cur)

    def ping(self) -> bool:
        try:
            self.client.admin.command("ping")
            return True
        except Exception:
            return False

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass
