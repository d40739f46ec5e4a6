"""Serving helpers: one valid record, small local model bundles, a store that can be taken away,
and the HTTP clients the API tests talk through (Flask's test client, urllib, raw sockets)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from churnops.contract import load_contract

EXAMPLE = load_contract("bank_churners").example  # one valid record, declared with the contract
READ_TIMEOUT_S = 3  # API_READ_TIMEOUT_S of the servers `api_env` starts


def example(**over) -> dict:
    """The contract's example record with some fields replaced."""
    return {**EXAMPLE, **over}


def make_bundle(path: Path, seed: int, with_onnx: bool = True, run_id: str | None = None) -> Path:
    """A tiny but real bundle: XGBoost fitted on the synthetic generator's customers."""
    import xgboost as xgb

    from churnops.bundle import export_onnx, write_bundle
    from churnops.cleaning import clean_frame
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


def local_model_set(bundles, fraction: float = 0.0):
    """Bundle `a` as champion (and `b` as challenger when `fraction` > 0), loaded without MLflow."""
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


def rec(i: int) -> dict:
    """A logged prediction document with id `p<i>` at ts 1000 + i."""
    return {
        "_id": f"p{i}",
        "ts": 1000.0 + i,
        "request_id": f"p{i}",
        "source": "http",
        "model_run_id": "r",
        "model_version": "1",
        "route": "champion",
        "features": {},
        "probability": 0.1,
        "decision": 0,
        "latency_ms": 1.0,
    }


# ---- Flask's test client ------------------------------------------------------------------------


def post(client, path, body, **kw):
    """POST `body` (JSON-encoded unless already str/bytes) through a Flask test client."""
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", **kw)


def wait_logged(state, n, timeout=5.0):
    """Until the app's prediction log has written `n` records to its store."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state.plog.flush()
        if state.store.count_predictions() >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"only {state.store.count_predictions()} of {n} records logged")


# ---- a running server ---------------------------------------------------------------------------


def http(method: str, url: str, body=None, headers=None, timeout=20):
    """(status, JSON or text) of one request to a running server (urllib)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if r.headers.get_content_type() == "application/json" else raw.decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def serving_env(stack_env, trained, state_dir: Path, **extra) -> dict:
    """The environment of an API or consumer process serving the session's trained run."""
    return {
        "RUN_ID": trained["run_id"],
        "STATE_DIR": str(state_dir),
        "MODEL_NAME": stack_env.model_name,
        "MLFLOW_TRACKING_URI": stack_env.mlflow_tracking_uri,
        "AWS_ENDPOINT_URL": stack_env.aws_endpoint_url,
        "ADMIN_TOKEN": "test-admin",
        "LOG_FLUSH_INTERVAL_S": "0.05",
        "CANARY_FRACTION": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(state_dir / "prom"),
        **{k: str(v) for k, v in extra.items()},
    }


def api_env(bundles, state: Path, port: int, **extra) -> dict:
    """The environment of an API process serving local bundle `a` (no MLflow)."""
    return {
        "MODEL_URI": str(bundles["a"]),
        "STATE_DIR": str(state),
        "API_PORT": str(port),
        "API_WORKERS": "2",
        "CANARY_FRACTION": "0",
        "LOG_FLUSH_INTERVAL_S": "0.05",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "PROMETHEUS_MULTIPROC_DIR": str(state / "prom"),
        "ADMIN_TOKEN": "test-admin",
        "API_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        **extra,
    }


def wait_ready(port: int, timeout: float = 120) -> None:
    """Until /ready answers 200 on connections that land on either worker."""
    deadline, hits = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and hits < 6:
        status, _ = request(port, "GET", "/ready")
        hits = hits + 1 if status == 200 else 0
        time.sleep(0.05)
    assert hits >= 6, "the API never became ready"


def request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 10) -> tuple[int, bytes]:
    """One request on its own connection (no client library: the test controls every byte)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        s.sendall(head.encode() + b"\r\n" + (body or b""))
        return read_answer(s)


def read_answer(s: socket.socket) -> tuple[int, bytes]:
    """(status, body) of one answer; (0, b"") when nothing came.

    Reads until the body's Content-Length is in (headers and body may come in separate packets) or
    the server closes; a reset after the answer (a server refusing a body it did not read) is a close.
    """
    data = b""
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            lengths = [
                line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            ]
            if lengths and len(rest) >= int(lengths[0]):
                break
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        data += chunk
    if not data:
        return 0, b""
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest


def ids(n: int, prefix: str = "r") -> list[str]:
    """`n` distinct request ids."""
    return [f"{prefix}{i:05d}" for i in range(n)]


def open_stores(tmp_path) -> dict:
    """The embedded store and MongoDB (mongomock) side by side, for tests that compare them."""
    import mongomock

    from churnops.store.mongo import MongoStore
    from churnops.store.sqlite import SQLiteStore

    return {"sqlite": SQLiteStore(tmp_path / "p.db"), "mongo": MongoStore(mongomock.MongoClient(), "churn")}
