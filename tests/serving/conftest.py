"""Serving fixtures: small local model bundles (no MLflow needed), stores, app clients, streams of their own."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.support.serving import local_model_set, make_bundle
from tests.support.streams import stream_settings_for


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bundles")
    return {
        "a": make_bundle(d / "a", 1),
        "b": make_bundle(d / "b", 2),
        "native": make_bundle(d / "native", 3, with_onnx=False),
    }


@pytest.fixture
def serving_settings(tmp_path, monkeypatch):
    """Settings with state in tmp (SQLite log, spool, reload state file)."""
    from churnops.settings import Settings

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    return Settings(
        _env_file=None,
        state_dir=tmp_path / "state",
        log_flush_interval_s=0.05,
        max_body_bytes=20_000,
        batch_row_limit=50,
        mlflow_tracking_uri="http://127.0.0.1:9",
    )


@pytest.fixture
def app_client(serving_settings, bundles):
    """(client, app state) for an app serving bundle `a` from a SQLite log in tmp."""
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager

    store = SQLiteStore(serving_settings.state_dir / "predictions.db")
    mm = ModelManager(serving_settings)
    mm.current = local_model_set(bundles)
    app = create_app(serving_settings, store=store, models=mm, start_background=False)
    state = app.extensions["churn"]
    state.plog.start()
    yield app.test_client(), state
    state.plog.close()
    store.close()


@pytest.fixture
def make_stream_settings(moto_endpoint, tmp_path, monkeypatch):
    """A function returning Settings with streams of their own on the session's moto Kinesis, state in
    tmp (see `tests.support.streams.stream_settings_for`; keyword arguments override)."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    return lambda **over: stream_settings_for(moto_endpoint, tmp_path / "state", **over)


@pytest.fixture
def stream_settings(make_stream_settings):
    """Two shards, batches of 25, polls every 10 ms."""
    return make_stream_settings()


@pytest.fixture(scope="module")
def mlflow_runs(mlflow_uri, bundles) -> dict[str, str]:
    """Bundles `a` and `native` logged as the `model` artifacts of two runs on the test MLflow server."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=mlflow_uri)
    exp = c.create_experiment(f"reload-{uuid.uuid4().hex[:8]}")
    runs = {}
    for name in ("a", "native"):
        run = c.create_run(exp)
        c.log_artifacts(run.info.run_id, str(bundles[name]), "model")
        c.set_terminated(run.info.run_id)
        runs[name] = run.info.run_id
    return runs
