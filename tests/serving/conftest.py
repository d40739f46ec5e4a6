"""Serving fixtures: small local model bundles (no MLflow needed), stores, app clients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from churnops.contract import load_contract

EXAMPLE = load_contract("bank_churners").example  # one valid record, declared with the contract


def example(**over) -> dict:
    return {**EXAMPLE, **over}


def make_bundle(path: Path, seed: int, with_onnx: bool = True, run_id: str | None = None) -> Path:
    """A tiny but real bundle: XGBoost fitted on the synthetic generator's customers."""
    import xgboost as xgb

    from churnops.bundle import export_onnx, write_bundle
    from churnops.cleaning import clean_frame
    from churnops.contract import load_contract
    from churnops.features import FeatureEncoder
    from churnops.synthetic import generate_customers

    contract = load_contract("bank_churners")
    clean = clean_frame(generate_customers(1500, seed=seed), contract)
    enc = FeatureEncoder.from_contract(contract)
    X = enc.transform_frame(clean)
    y = clean[contract.target.name].to_numpy().astype(int)
    model = xgb.XGBClassifier(n_estimators=20 + seed % 7, max_depth=3, learning_rate=0.3, n_jobs=1, random_state=seed)
    model.fit(X, y)
    onnx = export_onnx(model, enc.width) if with_onnx else None
    meta = {
        "model_name": "churn-test",
        "dataset": "bank_churners",
        "features": contract.feature_names,
        "test_metrics": {"auc_roc": 0.9, "f1": 0.5},
        "run_id": run_id or f"localrun{seed}",
    }
    return write_bundle(path, enc, model, 0.5, meta, onnx)


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


def local_model_set(bundles, fraction: float = 0.0):
    from serving.model import ModelSet, load_model

    champ = load_model(str(bundles["a"]), "champion")
    chall = load_model(str(bundles["b"]), "challenger") if fraction > 0 else None
    return ModelSet(champ, chall, fraction)


class FlakyStore:
    """Wraps a store; every write raises while `down` is True (the store 'taken away')."""

    def __init__(self, inner):
        self.inner = inner
        self.down = False

    def _check(self):
        if self.down:
            raise ConnectionError("store is down (test)")

    def insert_predictions(self, records):
        self._check()
        return self.inner.insert_predictions(records)

    def insert_batch(self, batch):
        self._check()
        return self.inner.insert_batch(batch)

    def insert_encoded(self, items):
        self._check()
        return self.inner.insert_encoded(items)

    def add_feedback(self, *a):
        self._check()
        return self.inner.add_feedback(*a)

    def add_feedback_many(self, items):
        self._check()
        return self.inner.add_feedback_many(items)

    def set_checkpoint(self, *a):
        self._check()
        return self.inner.set_checkpoint(*a)

    def get_checkpoint(self, *a):
        self._check()
        return self.inner.get_checkpoint(*a)

    def __getattr__(self, name):
        return getattr(self.inner, name)


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


def dumps(obj) -> str:
    return json.dumps(obj)


def ids(n: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]
