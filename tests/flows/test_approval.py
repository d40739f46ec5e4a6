"""The challenger's outcome after training, and the suspended approval run resumed programmatically.

Each test registers a new version of its own model (`own_model`: the session's trained version copied
as version 1, champion), then runs the flow's governance step (`govern`) inside a small Prefect flow
on the test harness's real server. A challenger that passes every rule leaves a *Suspended* `approve-model/approval` run and `govern`
returns at once; the tests answer the form through Prefect's API and run the resumed flow run here,
as a worker would.
"""

from __future__ import annotations

import time

import pytest

from tests.support.approval import execute

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


def run_gate(s, version, evidence, timeout_s, auto=False):
    """Run `govern` in a small flow, as the training flow does at its end; returns its result."""
    from prefect import flow

    from flows.train_flow import govern

    @flow(name="approval-gate-test")
    def gate() -> dict:
        return govern(s.model_copy(update={"auto_approve": auto}), version, ["challenger"], evidence, timeout_s)

    return gate()


def run_state(run_id):
    from prefect import get_client

    with get_client(sync_client=True) as c:
        return c.read_flow_run(run_id).state


def suspended_gate(s, version, timeout_s=60):
    """`govern` has returned (nothing waits in this process) and left a suspended run with the form."""
    out = run_gate(s, version, PASSING, timeout_s)
    assert out["outcome"] == "awaiting approval" and out["approval_run"], out
    st = run_state(out["approval_run"])
    assert st.is_paused() and st.name == "Suspended", st
    assert out["approval_url"].endswith(f"/runs/flow-run/{out['approval_run']}")
    return out["approval_run"]


def resume_and_run(run_id, answer):
    from prefect.flow_runs import resume_flow_run

    resume_flow_run(run_id, run_input=answer)
    return execute(run_id)


def champion(s):
    from churnops.registry import alias_version

    return alias_version(s.model_name, "champion", s).version


def last_audit(s, n=1):
    """The newest `n` audit records about this test's own model (the session's store is shared)."""
    from churnops.store.factory import open_store

    store = open_store(s)
    try:
        return store.find_audit(limit=n, model=s.model_name)
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


def test_approve_resumes_the_suspended_run_and_promotes(trained, own_model, prefect_harness):
    v, before = new_version(trained, own_model), champion(own_model)
    run_id = suspended_gate(own_model, v)
    assert champion(own_model) == before and tags(own_model, v)["outcome"] == "awaiting approval"
    final = resume_and_run(run_id, {"decision": "approve", "reason": "better on fresh labels", "approver": "ana"})
    assert final.is_completed() and final.result()["outcome"] == "promoted"
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


def test_reject_keeps_champion_with_reason(trained, own_model, prefect_harness):
    v, before = new_version(trained, own_model), champion(own_model)
    run_id = suspended_gate(own_model, v)
    final = resume_and_run(run_id, {"decision": "reject", "reason": "wait for the quarter", "approver": "bo"})
    assert final.is_completed() and final.result()["outcome"] == "rejected" and champion(own_model) == before
    assert tags(own_model, v)["outcome"] == "rejected"
    a = last_audit(own_model)[0]
    assert (a["action"], a["actor"], a["reason"]) == ("reject", "bo", "wait for the quarter")


def test_invalid_answers_are_refused_and_asked_again(trained, own_model, prefect_harness):
    from prefect.flow_runs import resume_flow_run

    v, before = new_version(trained, own_model), champion(own_model)
    run_id = suspended_gate(own_model, v)
    for bad in ({"decision": "maybe", "reason": "x"}, {"decision": "approve", "reason": ""}, None):
        with pytest.raises(RuntimeError, match="Cannot resume"):  # the form's schema refuses it
            resume_flow_run(run_id, run_input=bad)
        st = run_state(run_id)
        assert st.is_paused() and st.name == "Suspended"
    # the schema accepts a blank reason of spaces; the flow asks again, naming the problem
    from prefect.exceptions import Pause

    with pytest.raises(Pause):  # the flow suspends itself again (the engine ends the process with Pause)
        resume_and_run(run_id, {"decision": "approve", "reason": "   "})
    st = run_state(run_id)
    assert st.is_paused() and st.name == "Suspended"
    from prefect.input.actions import read_flow_run_input

    asked = read_flow_run_input(f"suspended-approve-v{v}-1-description", flow_run_id=run_id)
    assert "Asked again" in asked and "give a reason" in asked, asked
    assert champion(own_model) == before and tags(own_model, v)["outcome"] == "awaiting approval"
    final = resume_and_run(run_id, {"decision": "approve", "reason": "second try", "approver": "cy"})
    assert final.is_completed() and final.result()["outcome"] == "promoted" and champion(own_model) == v
    assert (last_audit(own_model)[0]["actor"], last_audit(own_model)[0]["reason"]) == ("cy", "second try")


def test_cancel_ends_the_suspended_run(trained, own_model, prefect_harness):
    from prefect import get_client
    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run
    from prefect.states import Cancelling

    v, before = new_version(trained, own_model), champion(own_model)
    run_id = suspended_gate(own_model, v)
    with get_client(sync_client=True) as c:  # what the UI's Cancel does
        c.set_flow_run_state(run_id, Cancelling())
    assert run_state(run_id).is_cancelled()  # no process to tear down: cancelled at once
    with pytest.raises(NotPausedError):
        resume_flow_run(run_id, run_input={"decision": "approve", "reason": "too late"})
    assert champion(own_model) == before


def test_no_decision_before_timeout_cannot_be_resumed(trained, own_model, prefect_harness):
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import resume_flow_run

    v, before = new_version(trained, own_model), champion(own_model)
    run_id = suspended_gate(own_model, v, timeout_s=1)
    time.sleep(2.5)
    with pytest.raises(FlowPauseTimeout):
        resume_flow_run(run_id, run_input={"decision": "approve", "reason": "too late"})
    assert run_state(run_id).is_failed() and champion(own_model) == before


def test_headless_promotes_only_with_auto_approve(trained, own_model, prefect_harness):
    v, before = new_version(trained, own_model), champion(own_model)
    assert run_gate(own_model, v, PASSING, 0)["outcome"] == "awaiting approval"
    assert champion(own_model) == before and tags(own_model, v)["outcome"] == "awaiting approval"
    assert run_gate(own_model, v, PASSING, 0, auto=True)["outcome"] == "promoted"
    assert champion(own_model) == v and last_audit(own_model)[0]["actor"] == "auto-approve"


def swept_audit(s, version):
    """The sweep's audit records about `version` of this test's model."""
    return [
        a
        for a in last_audit(s, 200)
        if (a["model"], a["to_version"], a["actor"]) == (s.model_name, version, "approval-sweep")
    ]


def test_sweep_rejects_a_version_whose_approval_run_was_cancelled(trained, own_model, prefect_harness):
    from prefect import get_client
    from prefect.states import Cancelling

    from churnops.approvals import sweep_approvals
    from churnops.registry import alias_version

    v, before = new_version(trained, own_model), champion(own_model)
    run_id = suspended_gate(own_model, v)
    assert tags(own_model, v)["approval_run"] == run_id  # govern records which run holds the form
    assert alias_version(own_model.model_name, "challenger", own_model).version == v
    assert all(c["version"] != v for c in sweep_approvals(own_model))  # still suspended: left alone
    assert tags(own_model, v)["outcome"] == "awaiting approval"
    with get_client(sync_client=True) as c:  # what the UI's Cancel does
        c.set_flow_run_state(run_id, Cancelling())
    mine = [c for c in sweep_approvals(own_model) if c["version"] == v]
    assert mine == [
        {
            "model": own_model.model_name,
            "version": v,
            "outcome": "rejected",
            "reason": "approval run cancelled",
            "approval_run": run_id,
        }
    ]
    t = tags(own_model, v)
    assert (t["outcome"], t["outcome_reason"]) == ("rejected", "approval run cancelled")
    assert alias_version(own_model.model_name, "challenger", own_model) is None  # no canary goes there
    assert champion(own_model) == before
    [a] = swept_audit(own_model, v)
    assert (a["action"], a["reason"], a["from_version"], a["approval_run"]) == (
        "reject",
        "approval run cancelled",
        before,
        run_id,
    )
    assert all(c["version"] != v for c in sweep_approvals(own_model))  # once only
    assert len(swept_audit(own_model, v)) == 1


def test_sweep_expires_a_version_whose_approval_run_timed_out(trained, own_model, prefect_harness):
    from churnops.approvals import sweep_approvals
    from churnops.registry import alias_version

    v, before = new_version(trained, own_model), champion(own_model)
    run_id = suspended_gate(own_model, v, timeout_s=1)
    time.sleep(2.5)  # past the pause timeout: Prefect fails the run (or will, when its service runs)
    mine = [c for c in sweep_approvals(own_model) if c["version"] == v]
    assert [(c["outcome"], c["approval_run"]) for c in mine] == [("expired", run_id)]
    assert tags(own_model, v)["outcome"] == "expired"
    assert alias_version(own_model.model_name, "challenger", own_model) is None
    assert champion(own_model) == before
    [a] = swept_audit(own_model, v)
    assert (a["action"], a["approval_run"]) == ("expired", run_id)


def test_sweep_expires_a_version_awaiting_without_an_approval_run(trained, own_model, prefect_harness):
    """A version left `awaiting approval` with no approval run (an old `make train` set only the outcome
    and `challenger`; or its run could not be opened) ends `expired` once APPROVAL_TIMEOUT_S has passed
    since its creation: challenger removed, an audit record; before that, or with no timeout, it waits."""
    from datetime import datetime, timedelta, timezone

    from churnops.approvals import sweep_approvals
    from churnops.registry import alias_version, client

    v, before = new_version(trained, own_model), champion(own_model)
    c = client(own_model)
    c.set_model_version_tag(own_model.model_name, v, "outcome", "awaiting approval")  # as the old code left it
    c.set_registered_model_alias(own_model.model_name, "challenger", v)
    assert "approval_run" not in tags(own_model, v) and "awaiting_since" not in tags(own_model, v)
    hour = own_model.model_copy(update={"approval_timeout_s": 3600.0})
    soon = datetime.now(timezone.utc) + timedelta(seconds=60)
    later = datetime.now(timezone.utc) + timedelta(seconds=3700)
    assert all(x["version"] != v for x in sweep_approvals(hour, now=soon))  # within its hour: left alone
    no_timeout = own_model.model_copy(update={"approval_timeout_s": 0.0})
    assert all(x["version"] != v for x in sweep_approvals(no_timeout, now=later))  # waits for `make promote`
    assert tags(own_model, v)["outcome"] == "awaiting approval"

    mine = [x for x in sweep_approvals(hour, now=later) if x["version"] == v]
    assert [(x["outcome"], x["approval_run"]) for x in mine] == [("expired", None)]
    assert mine[0]["reason"].startswith("no approval run and no decision before the approval timeout")
    assert tags(own_model, v)["outcome"] == "expired"
    assert alias_version(own_model.model_name, "challenger", own_model) is None  # no canary goes there
    assert champion(own_model) == before
    [a] = swept_audit(own_model, v)
    assert (a["action"], a["from_version"], a["approval_run"]) == ("expired", before, None)
    assert all(x["version"] != v for x in sweep_approvals(hour, now=later))  # once only
