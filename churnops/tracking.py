"""The MLflow client built from settings (tracking and registry URI); created on demand only."""

from __future__ import annotations

from churnops.settings import Settings, get_settings


def client(settings: Settings | None = None):
    """An MLflow client against the configured tracking server (also the registry)."""
    from mlflow.tracking import MlflowClient  # lazy: mlflow takes seconds to import (pyproject: lazy-imports)

    s = settings or get_settings()
    return MlflowClient(tracking_uri=s.mlflow_tracking_uri, registry_uri=s.mlflow_tracking_uri)
