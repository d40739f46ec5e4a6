"""Prefect flow "approve-model": a person's approve/reject of a challenger, holding no process while it waits.

A training run whose challenger passes every rule does not wait for the decision: it opens a run
of the deployment `approve-model/approval` and leaves it *Suspended* (Prefect's `suspend_flow_run`
state, with the approval form) and returns; `make train` prints the run's URL. Nothing runs while
the form waits, so no worker slot and no terminal is held. Approving or rejecting in the Prefect UI
(or `resume_flow_run(id, run_input={...})`) reschedules the run; a worker runs this flow from the
top, which finds the answer under the same pause key and applies it. Cancelling the suspended run
ends it: no process is left waiting anywhere. An answer the form's schema refuses is rejected by the
server and the run stays suspended; an answer that passes the schema but not our checks (a blank
reason) suspends the run again with a new key and the problem named in the form.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from pydantic import Field, ValidationError

from churnops import governance as g
from churnops.registry import client
from churnops.settings import Settings, get_settings
from flows.deployments import apply

FLOW_NAME = "approve-model"
DEPLOYMENT_NAME = "approval"
APPROVAL_DEPLOYMENT = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"
MAX_ASKS = 20  # an approver who keeps sending invalid answers is asked again up to this many times


class ApprovalInput(RunInput):
    """The form the Prefect UI shows on a suspended approval run: approve or reject, and why."""

    decision: Literal["approve", "reject"]
    reason: str = Field(min_length=1)
    approver: str = ""


def approval_key(version: str, attempt: int = 0) -> str:
    """The pause key of the `attempt`-th question for `version` (replayed in order after each resume)."""
    return f"approve-v{version}" if attempt == 0 else f"approve-v{version}-{attempt}"


def ui_url(s: Settings, flow_run_id: str | UUID) -> str:
    """The Prefect UI page of a flow run (the API URL without its `/api`)."""
    return f"{s.prefect_api_url.rstrip('/').removesuffix('/api')}/runs/flow-run/{flow_run_id}"


def problem_with(answer: ApprovalInput) -> str | None:
    """Why an answer the schema accepted still cannot be applied (None when it can)."""
    if not answer.reason.strip():
        return "reason: give a reason (it goes to the audit trail)"
    return None


def approval_deployment_id(s: Settings) -> UUID:
    """The id of `approve-model/approval`, registered (on pool WORK_POOL) when missing."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as c:
        try:
            return c.read_deployment_by_name(APPROVAL_DEPLOYMENT).id
        except ObjectNotFound:
            pass

    apply("approval", s)
    with get_client(sync_client=True) as c:
        return c.read_deployment_by_name(APPROVAL_DEPLOYMENT).id


def request_approval(
    s: Settings,
    version: str,
    task: str,
    rules: list[dict],
    champion_version: str | None,
    description: str,
    timeout_s: float,
) -> str:
    """Open a suspended `approve-model/approval` run holding the approval form; returns its id.

    The run is created from the deployment in a running state and suspended at once, so it needs no
    worker until someone answers (`suspend_flow_run` for another run saves the form on the caller's
    run, so the same steps are taken here with the new run's id).
    """
    from prefect import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.input.run_input import keyset_from_paused_state, run_input_subclass_from_type
    from prefect.states import Running, Suspended

    dep_id = approval_deployment_id(s)
    params = {
        "model_name": s.model_name,
        "version": str(version),
        "task": task,
        "rules": rules,
        "champion_version": champion_version,
        "description": description,
        "timeout_s": timeout_s,
    }
    state = Suspended(timeout_seconds=max(1, int(timeout_s)), pause_key=approval_key(version))
    keyset = keyset_from_paused_state(state)
    state.state_details.run_input_keyset = keyset
    form = run_input_subclass_from_type(ApprovalInput.with_initial_data(description=description))
    with get_client(sync_client=True) as c:
        # created running (never scheduled, so no worker picks it up), then suspended at once
        run = c.create_flow_run_from_deployment(
            dep_id,
            parameters=params,
            name=f"approve-{s.model_name}-v{version}",
            tags=["approval", s.model_name],
            state=Running(),
        )
        result = c.set_flow_run_state(run.id, state)
        if result.state is None or result.state.type != StateType.PAUSED:
            raise RuntimeError(f"approval run {run.id} could not be suspended: {result.details}")
    form.save(keyset, flow_run_id=run.id)
    return str(run.id)


def ask(version: str, description: str, timeout_s: float) -> ApprovalInput:
    """The first valid answer; each invalid one suspends the run again with the problem named.

    After each resume the flow runs from the top and replays the earlier keys: Prefect answers a
    fired key with the input stored under it, so the loop arrives where it stopped.
    """
    note = ""
    for attempt in range(MAX_ASKS):
        form = ApprovalInput.with_initial_data(description=description + note)
        try:
            answer = suspend_flow_run(
                wait_for_input=form, timeout=max(1, int(timeout_s)), key=approval_key(version, attempt)
            )
        except ValidationError as exc:  # resumed without an input, or one that no longer fits the form
            note = f"\n\n**Asked again:** the last answer was not valid ({exc.errors()[0]['msg']})."
            continue
        bad = problem_with(answer)
        if bad is None:
            return answer
        note = f"\n\n**Asked again:** {bad}."
    raise RuntimeError(f"no valid approval answer after {MAX_ASKS} tries")


@flow(name=FLOW_NAME, log_prints=True)
def approve_model_flow(
    model_name: str,
    version: str,
    task: str = "binary_classification",
    rules: list[dict] | None = None,
    champion_version: str | None = None,
    description: str = "",
    timeout_s: float | None = None,
) -> dict:
    """Wait (suspended) for approve/reject of `model_name` v`version`, then apply it. Returns the outcome."""
    s = get_settings().model_copy(update={"model_name": model_name})
    logger = get_run_logger()
    outcome = client(s).get_model_version(model_name, str(version)).tags.get("outcome")
    if outcome != g.AWAITING:  # decided another way meanwhile (`make promote`, a later run)
        logger.info("%s v%s is no longer awaiting approval (outcome %s): nothing to do", model_name, version, outcome)
        return {"outcome": outcome, "version": str(version)}
    description = description or (
        f"### Promote {model_name} v{version} to champion (champion now v{champion_version})?\n\n"
        "Every rule passed. Choose `approve` or `reject` and give a reason."
    )
    # an answer asked again gets the time the training run gave (default APPROVAL_TIMEOUT_S, else an hour)
    answer = ask(str(version), description, timeout_s or s.approval_timeout_s or 3600.0)
    who = answer.approver or "prefect-ui"
    if answer.decision == "approve":
        try:
            g.promote(str(version), answer.reason, s, who=who, rules=rules or [], action="approve")
        except g.PromotionRefused as exc:  # shadow_paired_test failed: audited; it stays awaiting approval
            logger.warning("%s", exc)
            return {"outcome": g.AWAITING, "version": str(version), "refused": str(exc), **exc.evidence}
        return {"outcome": g.PROMOTED, "version": str(version), "reason": answer.reason}
    g.set_outcome(s, str(version), g.REJECTED, reason=answer.reason)
    g.record_audit(s, "reject", model_name, champion_version, str(version), answer.reason, rules or [], who=who)
    return {"outcome": g.REJECTED, "version": str(version), "reason": answer.reason}
