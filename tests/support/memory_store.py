"""A PredictionStore in memory: the fast fake of the monitoring tests and `make bench-monitor`'s
"memory" backend. It runs the store contract suite (tests/serving/test_store.py) beside SQLite and
Mongo, so it keeps their semantics."""

from __future__ import annotations

import copy
import time
import uuid

from churnops.store.base import PredictionStore, feedback_outcome


class MemoryStore(PredictionStore):
    """The PredictionStore ABC in memory, with the stores' semantics: predictions by `_id`, first write
    wins; windows start <= ts < end; feedback newest `ts` wins; reports upserted; an append-only audit."""

    def __init__(self):
        self.predictions: dict[str, dict] = {}
        self.feedback: dict[str, dict] = {}
        self.checkpoints: dict[str, str] = {}
        self.reports: dict[str, dict] = {}
        self.audit: list[dict] = []

    def insert_predictions(self, records):
        new = 0
        for r in records:
            if r["_id"] not in self.predictions:  # a replay never rewrites history
                self.predictions[r["_id"]] = copy.deepcopy(r)
                new += 1
        return new

    @staticmethod
    def _in(ts, start, end):
        return (start is None or ts >= start) and (end is None or ts < end)

    def find_predictions(self, start=None, end=None, limit=None):
        out = sorted(
            (copy.deepcopy(r) for r in self.predictions.values() if self._in(r["ts"], start, end)),
            key=lambda r: r["ts"],
        )
        return out[:limit] if limit else out

    def count_predictions(self, start=None, end=None):
        return sum(self._in(r["ts"], start, end) for r in self.predictions.values())

    def add_feedback(self, request_id, outcome, ts):
        old = self.feedback.get(request_id)
        if old is None or float(ts) >= old["ts"]:  # an older outcome arriving later does not replace it
            rid = str(request_id)
            self.feedback[rid] = {"_id": rid, "request_id": rid, "outcome": feedback_outcome(outcome), "ts": float(ts)}

    def find_feedback(self, request_ids=None, start=None, end=None):
        ids = set(request_ids) if request_ids is not None else None
        return [
            dict(f)
            for f in self.feedback.values()
            if (ids is None or f["request_id"] in ids) and self._in(f["ts"], start, end)
        ]

    def get_checkpoint(self, key):
        return self.checkpoints.get(key)

    def set_checkpoint(self, key, value):
        self.checkpoints[key] = value

    def save_report(self, meta):
        self.reports[meta["_id"]] = copy.deepcopy(meta)

    def list_reports(self, limit=100):
        return sorted(self.reports.values(), key=lambda r: r["ts"], reverse=True)[:limit]

    def add_audit(self, record):
        rec = {
            **record,
            "_id": str(record.get("_id") or uuid.uuid4().hex),
            "ts": float(record.get("ts") or time.time()),
        }
        rec["seq"] = len(self.audit) + 1
        self.audit.append(copy.deepcopy(rec))
        return rec

    def find_audit(self, limit=50, offset=0, model=None):
        mine = [copy.deepcopy(a) for a in self.audit if model is None or a.get("model") == model]
        mine.sort(key=lambda a: (a["ts"], a["seq"]), reverse=True)
        return mine[int(offset) : int(offset) + int(limit)]

    def ping(self):
        return True
