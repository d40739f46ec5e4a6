"""The whole loop end to end on the embedded stack (issue 11).

gunicorn (2 workers) serves `models:/<name>@champion` from the MLflow server and logs every
prediction in the embedded store. Traffic from the real file is sent over HTTP, first as it is,
then with a concept drift on a segment (the true outcome of low-income customers flipped), and the
outcomes arrive later on `/feedback`. The retraining trigger sees the realized AUC fall below the
floor, collects the labels into a new snapshot and starts training on it (the real training flow,
run here instead of by a worker); the rules pass, the flow pauses for approval and is resumed with
an `approve` input through Prefect's API (training has returned by then: the approval run is
suspended, holding no process); the servers follow the alias to the new version. A load
thread keeps calling `/predict` through the whole switch: not one request may fail.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from ops.localservers import Server, free_port, wait_http
from simulators.traffic import to_request_features

N_DRIFTED = 900


def call(method: str, url: str, body=None, timeout: float = 20.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture
def loop_settings(own_model, tmp_path, monkeypatch):
    """This test's own model (champion v1) and its own store; approval by a person, 5 min at most."""
    from churnops.settings import get_settings

    for k, v in {
        "STATE_DIR": str(tmp_path / "state"),
        "APPROVAL_TIMEOUT_S": "300",
        "AUTO_APPROVE": "false",
        "LABEL_POLICY": "replace",
        "RETRAIN_COOLDOWN_HOURS": "1",
    }.items():
        monkeypatch.setenv(k, v)
    return get_settings()


@pytest.fixture
def api(loop_settings, tmp_path):
    """gunicorn on `models:/<name>@champion`, following the alias every second."""
    from tests.support.serving import serving_env

    s = loop_settings
    port = free_port()
    env = serving_env(s, {"run_id": ""}, tmp_path / "state", API_PORT=port, API_WORKERS=2, ALIAS_POLL_S=1)
    env.pop("RUN_ID")
    env["MODEL_URI"] = f"models:/{s.model_name}@champion"
    log = tmp_path / "gunicorn.log"
    from tests.support.paths import ROOT

    srv = Server(
        [sys.executable, "-m", "serving.server"],
        log,
        env=env,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", 60, srv.proc, log)
    deadline, loaded = time.monotonic() + 120, 0
    while time.monotonic() < deadline and loaded < 20:  # both workers have loaded the model (any may answer)
        st, m = call("GET", f"{url}/model")
        loaded = loaded + 1 if st == 200 and (m.get("champion") or {}).get("version") else 0
        time.sleep(0.05)
    assert loaded >= 20, f"the API never had its model loaded in every worker: {log.read_text()[-2000:]}"
    yield url
    srv.stop()


def real_rows(path: str, contract) -> pd.DataFrame:
    from churnops.cleaning import clean_frame

    return clean_frame(pd.read_csv(path), contract).sample(frac=1.0, random_state=7).reset_index(drop=True)


def send(url: str, rows: pd.DataFrame, contract, tag: str) -> list[tuple[str, float]]:
    """POST each row to /predict; returns (request_id, probability)."""
    out = []
    for i, rec in enumerate(rows[contract.feature_names].to_dict("records")):
        feats = to_request_features(rec, contract)
        rid = f"{tag}-{i}"
        st, b = call("POST", f"{url}/predict", {"request_id": rid, "features": feats})
        assert st == 200, b
        out.append((rid, b["probability"]))
    return out


def paused_approval_run(run_id: str, deadline_s: float = 60.0):
    """The id of the approval run training opened, once Prefect shows it suspended (other tests of the
    session leave suspended approval runs of their own: this one is found by its id)."""
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as c:
            run = c.read_flow_run(UUID(run_id))
        if run.state is not None and run.state.type == StateType.PAUSED:
            return run.id
        time.sleep(0.5)
    raise AssertionError(f"the approval run {run_id} never showed as suspended")


def test_drift_labels_retrain_rules_approval_serving(loop_settings, api, real_data_path):
    from sklearn.metrics import roc_auc_score

    from churnops.contract import load_contract
    from churnops.registry import alias_version
    from churnops.store.factory import open_store
    from flows.labels_flow import labels_collector
    from flows.train_flow import train_flow
    from reporting.trigger import default_start_training, evaluate_window
    from simulators.traffic import apply_drift

    s = loop_settings
    contract = load_contract(s.dataset)
    pool = real_rows(real_data_path, contract)
    assert call("GET", f"{api}/model")[1]["champion"]["version"] == "1"

    # traffic with a concept drift on a segment, its outcomes arriving later on /feedback
    rows = pool.iloc[:N_DRIFTED]
    drifted, outcome, changed = apply_drift(
        rows, ["concept"], np.ones(len(rows)), np.random.default_rng(3), contract.target.name
    )
    assert changed["concept"] > 150  # the segment is about a third of the customers
    sent = send(api, drifted, contract, "drift")
    auc_drifted = roc_auc_score(outcome, [p for _, p in sent])
    assert auc_drifted < s.auc_floor  # the world moved: the champion's realized AUC falls
    for (rid, _), y in zip(sent, outcome):
        st, _b = call("POST", f"{api}/feedback", {"request_id": rid, "outcome": int(y)})
        assert st == 202

    # a load thread calls /predict through the whole switch
    probe = {"request_id": "probe", "features": {}}
    probe["features"] = to_request_features(pool.iloc[N_DRIFTED].to_dict(), contract)
    failures, versions, stop = [], [], threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                st, b = call("POST", f"{api}/predict", probe, timeout=10)
                (versions if st == 200 else failures).append(b.get("model_version") if st == 200 else (st, b))
            except Exception as exc:  # a refused or reset connection is a failed request too
                failures.append(repr(exc))
            time.sleep(0.01)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()

    # the trigger: realized AUC below the floor -> labels -> new snapshot -> training (paused for approval)
    trained: dict = {}

    class Started:
        id = "inline"

    def run_inline(name, timeout=0, tags=None, parameters=None):
        def target():
            try:
                trained.update(train_flow(n_trials=4, data_profile=False, **(parameters or {})))
            except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
                trained["error"] = repr(exc)

        threading.Thread(target=target, daemon=True).start()
        return Started()

    store = open_store(s)
    try:
        decision = evaluate_window(
            store,
            s,
            contract,
            window_hours=1.0,
            start_training=default_start_training(s, labels_collector(s), run=run_inline),
        )
    finally:
        store.close()
    assert decision["action"] == "started", decision
    assert any("realized AUC" in r for r in decision["reasons"]), decision["reasons"]
    params = decision["parameters"]
    assert params["snapshot"].startswith(f"s3://{s.bucket}/snapshots/") and params["holdout"], params

    # the rules passed: training returned, leaving a suspended approval run (no process waits for it)
    from prefect.flow_runs import resume_flow_run

    from tests.support.approval import execute

    deadline = time.monotonic() + 420
    while time.monotonic() < deadline and not trained:
        time.sleep(0.3)
    assert trained and "error" not in trained, trained
    assert trained["outcome"] == "awaiting approval" and trained.get("approval_run"), trained
    run_id = paused_approval_run(trained["approval_run"])
    assert alias_version(s.model_name, "champion", s).version == "1"  # nothing moves before approval
    # one person's decision, given through Prefect's API; the resumed run is run here as a worker would
    resume_flow_run(
        run_id, run_input={"decision": "approve", "reason": "e2e: recovers the drifted segment", "approver": "ops-lead"}
    )
    final = execute(run_id)
    assert final.is_completed() and final.result()["outcome"] == "promoted", final
    new = str(trained["version"])
    assert new != "1" and alias_version(s.model_name, "champion", s).version == new
    assert alias_version(s.model_name, "previous", s).version == "1"

    # serving follows the alias: every worker answers with the new version, and nothing failed
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and versions[-40:].count(new) < 40:
        time.sleep(0.3)
    stop.set()
    loader.join(15)
    assert not failures, failures[:5]
    assert versions[0] == "1" and versions[-40:] == [new] * 40
    st, m = call("GET", f"{api}/model")
    assert st == 200 and m["champion"]["version"] == new

    # the lineage names both snapshots, and the audit trail has the promotion with the approver's reason
    from churnops.registry import client

    run = client(s).get_run(trained["run_id"])
    tags = run.data.tags
    assert params["snapshot"] in json.dumps(tags) and tags["holdout_snapshot"] == params["holdout"], tags
    assert tags["snapshot_source"] == "feedback" and tags["parent_snapshot"].startswith(f"s3://{s.bucket}/snapshots/")
    assert tags["parent_snapshot"] != params["snapshot"] and tags["label_policy"] == "replace"
    st, audit = call("GET", f"{api}/audit?limit=20")
    assert st == 200
    approve = [r for r in audit["records"] if r["action"] == "approve" and str(r["to_version"]) == new]
    assert approve and approve[0]["reason"] == "e2e: recovers the drifted segment", audit["records"][:3]
    assert approve[0]["actor"] == "ops-lead" and str(approve[0]["from_version"]) == "1"
    assert all(r["passed"] for r in approve[0]["rules"]), approve[0]["rules"]
    assert [r["action"] for r in audit["records"][:2]] == ["approve", "awaiting approval"]
