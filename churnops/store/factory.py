"""Pick the prediction-log backend from settings: MongoDB when MONGODB_URI is set, else SQLite."""

from __future__ import annotations

from churnops.settings import Settings, get_settings
from churnops.store.base import PredictionStore
from churnops.store.mongo import MongoStore
from churnops.store.sqlite import SQLiteStore


def sqlite_path(settings: Settings):
    return settings.state_path(settings.prediction_db_path, "predictions.db")


def open_store(settings: Settings | None = None) -> PredictionStore:
    """The configured store; opening does not touch the network (connections are lazy)."""
    s = settings or get_settings()
    if s.mongodb_uri:
        return MongoStore.from_uri(s.mongodb_uri, s.mongodb_db)

    return SQLiteStore(sqlite_path(s))
