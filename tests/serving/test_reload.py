"""`/model/reload` in the background (202 + status), its allowlist, and redacted MLflow URIs in answers."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from ops.localservers import free_port
from tests.netfaults import BlackHole
from tests.support.serving import example, local_model_set

RUN = "0123456789abcdef0123456789abcdef"


def post(client, path, body, **kw):
    return client.post(path, data=json.dumps(body), content_type="application/json", **kw)


def make_app(tmp_path, bundles, tracking_uri: str, loaded: bool = True):
    """(client, state, auth header) of an app serving bundle `a`, its MLflow at `tracking_uri`."""
    from churnops.settings import Settings
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager

    s = Settings(
        _env_file=None,
        state_dir=tmp_path / "state",
        mlflow_tracking_uri=tracking_uri,
        log_flush_interval_s=0.05,
        model_name="churn-test",
    )
    mm = ModelManager(s)
    mm.freeze_gc = False
    if loaded:
        mm.current = local_model_set(bundles)
    app = create_app(s, store=SQLiteStore(tmp_path / "p.db"), models=mm, start_background=False)
    token = (s.state_dir / "admin_token").read_text().strip()
    return app.test_client(), app.extensions["churn"], {"Authorization": f"Bearer {token}"}


def wait_job(client, url, hdr, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(url, headers=hdr).json
        if job["status"] != "pending":
            return job
        time.sleep(0.1)
    raise AssertionError(f"reload still pending after {timeout} s: {job}")


@pytest.fixture
def fast_mlflow_http(monkeypatch):
    """What the servers export (churnops.registry.bound_mlflow_http), small enough for a test."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")


@pytest.fixture
def blackhole():
    bh = BlackHole()
    yield bh
    bh.close()


def test_reload_rejects_non_string_and_foreign_uris_with_422(tmp_path, bundles, blackhole):
    """Issue 13 items 9 and 18: nothing outside the allowlist is loaded, and no host is called for it."""
    client, state, hdr = make_app(tmp_path, bundles, "http://127.0.0.1:9")
    cases = [
        ({"model_uri": 12}, "model_uri"),
        ({"model_uri": ["runs:/x"]}, "model_uri"),
        ({"model_uri": {}}, "model_uri"),
        ({"run_id": 7}, "run_id"),
        ({"run_id": "../../etc"}, "run_id"),
        ({"challenger_uri": 3}, "challenger_uri"),
        ({"model_uri": f"mlflow-artifacts://127.0.0.1:{blackhole.port}/evil/model"}, "model_uri"),
        ({"model_uri": f"http://127.0.0.1:{blackhole.port}/model"}, "model_uri"),
        ({"model_uri": f"file://{bundles['b']}"}, "model_uri"),
        ({"model_uri": str(bundles["b"])}, "model_uri"),
        ({"model_uri": "models:/another-model@champion"}, "model_uri"),
        ({"model_uri": f"runs:/{RUN}/model", "run_id": RUN}, "run_id"),
        ({"challenger_uri": f"mlflow-artifacts://127.0.0.1:{blackhole.port}/x"}, "challenger_uri"),
    ]
    for body, field in cases:
        r = post(client, "/model/reload", body, headers=hdr)
        assert r.status_code == 422, (body, r.status_code, r.json)
        assert list(r.json["details"]) == [field], (body, r.json)
        if field != "run_id":
            assert (
                "models:/churn-test@<alias>" in r.json["details"][field] and "runs:/<32-hex" in r.json["details"][field]
            )
    assert blackhole.accepted == 0
    assert not (state.settings.state_dir / "reloads").exists()  # nothing was started
    assert post(client, "/predict", example()).json["model_run_id"] == "localrun1"


def test_reload_needs_the_admin_token(tmp_path, bundles):
    client, _, hdr = make_app(tmp_path, bundles, "http://127.0.0.1:9")
    body = {"model_uri": f"runs:/{RUN}/model"}
    assert post(client, "/model/reload", body).status_code == 401
    assert post(client, "/model/reload", body, headers={"X-Admin-Token": "change-me-local-admin"}).status_code == 401
    assert post(client, "/model/reload", body, headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get(f"/model/reload/{uuid.uuid4().hex}").status_code == 401
    assert client.get(f"/model/reload/{uuid.uuid4().hex}", headers=hdr).status_code == 404
    assert client.get("/model/reload/..%2Fadmin_token", headers=hdr).status_code == 404


@pytest.mark.parametrize("mlflow", ["silent", "closed"])
def test_reload_with_mlflow_away_answers_202_and_keeps_serving(
    tmp_path, bundles, blackhole, fast_mlflow_http, mlflow, caplog
):
    """Issue 13 items 16 and 19: MLflow is off the request path; its credentials never show."""
    port = blackhole.port if mlflow == "silent" else free_port()
    client, state, hdr = make_app(tmp_path, bundles, f"http://alice:s3cret@127.0.0.1:{port}")
    r = post(client, "/model/reload", {"model_uri": f"runs:/{RUN}/model", "challenger_uri": None}, headers=hdr)
    assert r.status_code == 202, r.json
    job = r.json
    assert job["status"] in ("pending", "failed") and job["status_url"] == f"/model/reload/{job['id']}"
    assert r.headers["Location"] == job["status_url"] and job["serving"] == str(bundles["a"])
    if job["status"] == "pending" and mlflow == "silent":  # one reload at a time per process
        busy = post(client, "/model/reload", {}, headers=hdr)
        assert busy.status_code == 409 and busy.json["id"] == job["id"]
    assert post(client, "/predict", example()).json["model_run_id"] == "localrun1"  # the old model serves
    done = wait_job(client, job["status_url"], hdr)
    assert done["status"] == "failed" and done["id"] == job["id"] and done["finished_at"] >= done["submitted_at"]
    assert "s3cret" not in done["reason"] and "***@127.0.0.1" in done["reason"], done["reason"]
    assert post(client, "/predict", example()).json["model_run_id"] == "localrun1"
    assert client.get("/ready").status_code == 200
    if mlflow == "silent":
        assert blackhole.accepted >= 1
    assert "s3cret" not in caplog.text


def test_reload_through_mlflow_loads_in_the_background(tmp_path, bundles, mlflow_runs, mlflow_uri):
    client, state, hdr = make_app(tmp_path, bundles, mlflow_uri)
    r = post(client, "/model/reload", {"run_id": mlflow_runs["native"], "challenger_uri": None}, headers=hdr)
    assert r.status_code == 202, r.json
    done = wait_job(client, r.json["status_url"], hdr)
    assert done["status"] == "loaded", done
    assert done["champion"] == f"runs:/{mlflow_runs['native']}/model" and done["generation"] == 1
    assert post(client, "/predict", example()).json["model_run_id"] == "localrun3"
    assert client.get("/model").json["champion"]["runtime"] == "compiled-trees"
    st = json.loads((state.settings.state_dir / "serving-model.json").read_text())  # shared with the other workers
    assert st["champion"] == done["champion"] and st["generation"] == 1
    # a run that does not exist: failed with the reason, the loaded model keeps serving
    r = post(client, "/model/reload", {"model_uri": f"runs:/{RUN}/model"}, headers=hdr)
    failed = wait_job(client, r.json["status_url"], hdr)
    assert failed["status"] == "failed" and RUN in failed["reason"], failed
    assert post(client, "/predict", example()).json["model_run_id"] == "localrun3"


def test_status_of_a_reload_whose_worker_died(tmp_path, bundles):
    """A job left pending by a process that exited reads as failed (any worker answers the status)."""
    client, state, hdr = make_app(tmp_path, bundles, "http://127.0.0.1:9")
    jid = uuid.uuid4().hex
    d = state.settings.state_dir / "reloads"
    d.mkdir(parents=True)
    (d / f"{jid}.json").write_text(
        json.dumps({"id": jid, "status": "pending", "pid": 2**22 + 17, "submitted_at": time.time()})
    )
    job = client.get(f"/model/reload/{jid}", headers=hdr).json
    assert job["status"] == "failed" and "exited before it finished" in job["reason"]


def test_not_loaded_answers_redact_the_mlflow_uri(tmp_path, bundles, fast_mlflow_http, caplog):
    """Issue 13 item 19: /ready, /model and /predict's 503 quote the load error without credentials."""
    client, state, _ = make_app(tmp_path, bundles, f"http://alice:s3cret@127.0.0.1:{free_port()}", loaded=False)
    models = state.models
    models.start_background(retry_s=60)
    try:
        deadline = time.monotonic() + 30
        while models.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert models.last_error, "the loader did not fail"
        for r in (
            client.get("/ready"),
            client.get("/model"),
            post(client, "/predict", example()),
            post(client, "/predict/batch", [example()]),
        ):
            assert r.status_code == 503, r.json
            text = json.dumps(r.json)
            assert "s3cret" not in text and "***@127.0.0.1" in text, text
        assert "s3cret" not in caplog.text and "***@127.0.0.1" in caplog.text
    finally:
        models.stop()
