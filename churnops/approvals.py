"""Approvals that ended without a decision: a cancelled or timed-out approval run gives its version an outcome.

A version that passed every rule is `awaiting approval`, holds `challenger` and has a suspended run of
`approve-model/approval` (its id in the version's tag `approval_run`, flows/approval_flow.py). When
that run is cancelled in the Prefect UI, or times out (Prefect fails a pause that is not resumed
within its timeout, `APPROVAL_TIMEOUT_S`), nothing runs to say so. `sweep_approvals` looks at the
line's versions still awaiting approval and, where their run has ended without a decision, sets the
outcome through `governance.set_outcome` (which takes `challenger` away, so no canary traffic goes
there) with an audit record:

- run cancelled (or cancelling)             -> `rejected`, reason "approval run cancelled"
- run failed or crashed (the pause timeout) -> `expired`, the run's message as the reason
- run still paused past its pause timeout   -> `expired` (Prefect's own sweep has not run yet)
- run deleted                               -> `expired`
- no approval run at all (a version awaiting from before approval runs existed, or whose run could not
  be opened or tagged) and no decision `APPROVAL_TIMEOUT_S` after it began to await (its tag
  `awaiting_since`, else the version's creation time) -> `expired`; with `APPROVAL_TIMEOUT_S=0` (no
  approval run, the decision is `make promote`) such a version waits for `make promote`

The retrain-trigger and report flows and `make train` / `make promote` call it; it costs one registry
search and, only when a version is awaiting with a run, one Prefect read per such version.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from churnops import governance as g
from churnops.model_line import resolved
from churnops.registry import alias_version, check_tracking, client
from churnops.settings import Settings

log = logging.getLogger(__name__)

RUN_TAG = "approval_run"  # the model version tag holding the id of its approval run
CANCELLED_REASON = "approval run cancelled"
SWEEPER = "approval-sweep"  # the audit records' actor


def remember_run(s: Settings, version: str, run_id: str) -> None:
    """Tag `version` with the id of its approval run, so the sweep can find the run later."""
    s = resolved(s)
    client(s).set_model_version_tag(s.model_name, str(version), RUN_TAG, str(run_id))


def verdict(state, found: bool = True, now: datetime | None = None) -> tuple[str, str] | None:
    """(outcome, reason) for an approval run that ended without a decision, else None (still open or decided).

    `state` is the run's Prefect state (None when unknown); `found` is False when the run is gone.
    """
    if not found:
        return g.EXPIRED, "approval run not found (deleted): no decision can arrive"
    if state is None:
        return None
    if state.is_cancelled() or state.is_cancelling():
        return g.REJECTED, CANCELLED_REASON
    if state.is_failed() or state.is_crashed():
        return g.EXPIRED, f"approval run {state.name.lower()}: {state.message or 'no decision in time'}"
    if state.is_paused():
        deadline = state.state_details.pause_timeout
        when = now or datetime.now(timezone.utc)
        if deadline is not None and deadline < when:
            return g.EXPIRED, f"no decision before the approval timeout ({deadline.isoformat()})"
    return None


def awaiting_since(mv) -> float:
    """When the model version `mv` began to await approval (epoch seconds): its `awaiting_since` tag,
    else (a version from before the tag existed) its creation time."""
    tag = (mv.tags or {}).get(g.AWAITING_SINCE_TAG)
    try:
        return float(tag)
    except (TypeError, ValueError):
        return (mv.creation_timestamp or 0) / 1000.0


def awaiting(s: Settings) -> list[tuple[str, str | None, float]]:
    """(version, approval run id or None, awaiting since) of the line's versions still `awaiting approval`."""
    s = resolved(s)
    found = []
    for mv in client(s).search_model_versions(f"name = '{s.model_name}'"):
        tags = mv.tags or {}
        if tags.get("outcome") == g.AWAITING:
            found.append((str(mv.version), tags.get(RUN_TAG) or None, awaiting_since(mv)))
    return sorted(found, key=lambda x: int(x[0]))


def verdict_without_run(since: float, timeout_s: float, now: datetime | None = None) -> tuple[str, str] | None:
    """(expired, reason) for a version awaiting approval with no approval run once `timeout_s` has passed
    since `since` (epoch seconds), else None; `timeout_s <= 0` is no timeout (the decision is `make promote`)."""
    if timeout_s <= 0:
        return None
    deadline = datetime.fromtimestamp(since + timeout_s, timezone.utc)
    if deadline < (now or datetime.now(timezone.utc)):
        return g.EXPIRED, f"no approval run and no decision before the approval timeout ({deadline.isoformat()})"
    return None


def read_state(run_id: str):
    """(state, found) of a Prefect flow run."""
    from prefect import get_client  # heavy: imported only when a version awaits approval in a run
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():  # never start an ephemeral server just to look
        raise RuntimeError(f"PREFECT_API_URL is not set: cannot read approval run {run_id}")
    with get_client(sync_client=True) as c:
        try:
            return c.read_flow_run(run_id).state, True
        except ObjectNotFound:
            return None, False


def sweep_approvals(s: Settings, now: datetime | None = None) -> list[dict]:
    """Give each version whose approval run ended without a decision its outcome (see the module
    docstring), with an audit record; returns what was changed."""
    s = resolved(s)
    changed = []
    for version, run_id, since in awaiting(s):
        if run_id is None:
            decided = verdict_without_run(since, s.approval_timeout_s, now)
        else:
            state, found = read_state(run_id)
            decided = verdict(state, found, now)
        if decided is None:
            continue
        outcome, reason = decided
        if client(s).get_model_version(s.model_name, version).tags.get("outcome") != g.AWAITING:
            continue  # decided meanwhile (`make promote`, the approval flow)
        g.set_outcome(s, version, outcome, reason=reason)
        champ = alias_version(s.model_name, g.CHAMPION, s)
        action = "reject" if outcome == g.REJECTED else outcome
        g.record_audit(
            s,
            action,
            s.model_name,
            champ.version if champ else None,
            version,
            reason,
            who=SWEEPER,
            approval_run=run_id,
        )
        log.info("%s v%s: %s (%s)", s.model_name, version, outcome, reason)
        changed.append(
            {"model": s.model_name, "version": version, "outcome": outcome, "reason": reason, "approval_run": run_id}
        )
    return changed


def sweep_quietly(s: Settings) -> list[dict]:
    """`sweep_approvals`, where a failure (no Prefect or MLflow server) is logged, never raised: the
    callers (reports, the trigger, `make train`/`make promote`) have their own job to do."""
    try:
        check_tracking(s, timeout=2.0)  # a registry that is down fails here at once, not after the client's retries
        return sweep_approvals(s)
    except Exception as exc:
        log.warning("could not check pending approvals of %s: %s", s.model_name or s.dataset, exc)
        return []
