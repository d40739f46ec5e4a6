"""The challenger's outcome after training, and the approval pause resumed programmatically.

Each test registers a new version of the session's trained model, then runs the flow's
governance step (`govern`) inside a small Prefect flow on the test harness's real server.
"""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.integration

PASSING = {
    "test_auc_roc": 0.99,
    "calibration_error": 0.01,
    "onnx_parity_passed": True,
    "contract_passed": True,
    "comparisons": [{"on": "test split", "rows": 100, "challenger_auc_roc": 0.99, "champion_auc_roc": 0.95}],
}


def new_version(trained, s) -> str:
    import mlflow

    mlflow.set_registry_uri(s.mlflow_tracking_uri)
    mv = mlflow.register_model(f"runs:/{trained['run_id']}/model", s.model_name)
    return str(mv.version)


def run_gate(s, version, evidence, timeout_s, answer=None, auto=False):
    """Run `govern` in a flow (in a thread when it pauses); resume it with `answer` once paused."""
    from prefect import flow
    from prefect.context import FlowRunContext

    from flows.train_flow import govern

    ids: list = []
    result: dict = {}

    @flow(name="approval-gate-test")
    def gate() -> dict:
        ids.append(FlowRunContext.get().flow_run.id)
        return govern(s.model_copy(update={"auto_approve": auto}), version, ["challenger"], evidence, timeout_s)

    t = threading.Thread(target=lambda: result.update(gate()), daemon=True)
    t.start()
    if answer is not None:
        from prefect import get_client
        from prefect.flow_runs import resume_flow_run

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if ids:
                with get_client(sync_client=True) as c:
                    st = c.read_flow_run(ids[0]).state
                if st is not None and st.is_paused():
                    break
            time.sleep(0.3)
        resume_flow_run(ids[0], run_input=answer)
    t.join(120)
    assert not t.is_alive()
    return result


def champion(s):
    from churnops.registry import alias_version

    return alias_version(s.model_name, "champion", s).version


def last_audit(s, n=1):
    from churnops.store.factory import open_store

    store = open_store(s)
    try:
        return store.find_audit(limit=n)
    finally:
        store.close()


def tags(s, version):
    from churnops.registry import client

    return client(s).get_model_version(s.model_name, version).tags


def test_blocked_challenger_lists_failed_rules_and_keeps_champion(trained, own_model, prefect_harness):
    v, before = new_version(trained, own_model), champion(own_model)
    bad = PASSING | {"test_auc_roc": 0.5, "onnx_parity_passed": False}
    out = run_gate(own_model, v, bad, 30)
    assert out["outcome"] == "blocked" and set(out["failed_rules"]) == {"min_test_auc_roc", "require_onnx_parity"}
    assert champion(own_model) == before
    assert tags(own_model, v)["outcome"] == "blocked"
    assert tags(own_model, v)["failed_rules"] == "min_test_auc_roc, require_onnx_parity"
    a = last_audit(own_model)[0]
    assert a["action"] == "blocked" and a["to_version"] == v and "min_test_auc_roc" in a["reason"]


def test_approve_in_the_pause_promotes(trained, own_model, prefect_harness):
    v, before = new_version(trained, own_model), champion(own_model)
    out = run_gate(
        own_model, v, PASSING, 60, {"decision": "approve", "reason": "better on fresh labels", "approver": "ana"}
    )
    assert out["outcome"] == "promoted"
    assert champion(own_model) == v
    from churnops.registry import alias_version

    assert alias_version(own_model.model_name, "previous", own_model).version == before
    a = last_audit(own_model)[0]
    assert (a["action"], a["actor"], a["reason"], a["from_version"], a["to_version"]) == (
        "approve",
        "ana",
        "better on fresh labels",
        before,
        v,
    )
    assert all(r["passed"] for r in a["rules"])


def test_reject_in_the_pause_keeps_champion_with_reason(trained, own_model, prefect_harness):
    v, before = new_version(trained, own_model), champion(own_model)
    out = run_gate(
        own_model, v, PASSING, 60, {"decision": "reject", "reason": "wait for the quarter", "approver": "bo"}
    )
    assert out["outcome"] == "rejected" and champion(own_model) == before
    assert tags(own_model, v)["outcome"] == "rejected"
    a = last_audit(own_model)[0]
    assert (a["action"], a["actor"], a["reason"]) == ("reject", "bo", "wait for the quarter")


def test_no_decision_before_timeout_expires_and_keeps_champion(trained, own_model, prefect_harness):
    v, before = new_version(trained, own_model), champion(own_model)
    out = run_gate(own_model, v, PASSING, 2)
    assert out["outcome"] == "expired" and champion(own_model) == before
    assert tags(own_model, v)["outcome"] == "expired"
    assert last_audit(own_model)[0]["action"] == "expired"


def test_headless_promotes_only_with_auto_approve(trained, own_model, prefect_harness):
    v, before = new_version(trained, own_model), champion(own_model)
    assert run_gate(own_model, v, PASSING, 0)["outcome"] == "awaiting approval"
    assert champion(own_model) == before and tags(own_model, v)["outcome"] == "awaiting approval"
    assert run_gate(own_model, v, PASSING, 0, auto=True)["outcome"] == "promoted"
    assert champion(own_model) == v and last_audit(own_model)[0]["actor"] == "auto-approve"
