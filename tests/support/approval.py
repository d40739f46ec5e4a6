"""Approval runs answered as a worker would: run a resumed `approve-model/approval` flow run here."""

from __future__ import annotations


def execute(run_id):
    """What a worker does with a resumed run: run the deployment's flow for it (here, in this process)."""
    from prefect import get_client
    from prefect.flow_engine import run_flow

    from flows.approval_flow import approve_model_flow

    with get_client(sync_client=True) as c:
        fr = c.read_flow_run(run_id)
    return run_flow(approve_model_flow, flow_run=fr, parameters=fr.parameters, return_type="state")
