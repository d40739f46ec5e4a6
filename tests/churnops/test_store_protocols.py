"""The store interface split by caller (churnops.store.protocols): the backends offer every part; a
double offering one part is that part only, and a caller typed with it runs on it."""

from __future__ import annotations

import json
import time

from churnops.store.mongo import MongoStore
from churnops.store.protocols import AuditStore, CheckpointStore, PredictionRecords, ReportStore
from churnops.store.sqlite import SQLiteStore

PARTS = (PredictionRecords, CheckpointStore, AuditStore, ReportStore)


def test_sqlite_store_offers_every_part(tmp_path):
    store = SQLiteStore(tmp_path / "p.db")
    try:
        assert all(isinstance(store, part) for part in PARTS)
    finally:
        store.close()


def methods(part) -> list[str]:
    return [n for n, v in vars(part).items() if callable(v) and not n.startswith("_")]


def test_mongo_store_class_defines_every_method_of_every_part():
    """(No MongoDB here: the class is checked.) The leases and the audit trail, which the base class
    refuses, are MongoStore's own."""
    for part in PARTS:
        assert [n for n in methods(part) if not callable(getattr(MongoStore, n, None))] == [], part.__name__
    for part in (CheckpointStore, AuditStore, ReportStore):
        assert [n for n in methods(part) if n not in vars(MongoStore)] == [], part.__name__


class OnlyLeases:
    """A checkpoint store and nothing else: named values and leases in dicts."""

    def __init__(self):
        self.values, self.leases = {}, {}

    def get_checkpoint(self, key):
        return self.values.get(key)

    def set_checkpoint(self, key, value):
        self.values[key] = value

    def create_lease(self, lease):
        return self.leases.setdefault(lease.key, lease) is lease

    def get_lease(self, key):
        return self.leases.get(key)

    def list_leases(self, prefix):
        return [v for k, v in sorted(self.leases.items()) if k.startswith(prefix)]

    def cas_lease(self, key, counter, owner, expires, pending_owner, bump):
        lease = self.leases.get(key)
        if lease is None or lease.counter != counter:
            return False
        lease.owner, lease.expires, lease.pending_owner = owner, expires, pending_owner
        lease.counter += 1 if bump else 0
        return True

    def checkpoint_lease(self, key, owner, counter, checkpoint, seq, backwards_ok=False):
        lease = self.leases.get(key)
        if lease is None or lease.owner != owner or lease.counter != counter:
            return False
        lease.checkpoint, lease.seq = checkpoint, seq
        return True


def test_a_checkpoint_store_is_not_a_prediction_store_and_the_trigger_runs_on_it():
    """The retraining trigger's decision needs checkpoints only: it runs on `OnlyLeases`."""
    from churnops.settings import Settings
    from reporting.trigger import HISTORY, LAST_DECISION, evaluate_trigger

    store = OnlyLeases()
    assert isinstance(store, CheckpointStore)
    assert not isinstance(store, PredictionRecords) and not isinstance(store, ReportStore)
    s = Settings(_env_file=None)
    decision = evaluate_trigger(store, s, drift=None, performance=None, now=time.time(), alert=False, dry_run=True)
    assert decision["action"] == "none" and decision["triggered"] is False
    assert json.loads(store.get_checkpoint(LAST_DECISION))["action"] == "none"
    assert [h["action"] for h in json.loads(store.get_checkpoint(HISTORY))] == ["none"]
