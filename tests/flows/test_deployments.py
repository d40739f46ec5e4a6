"""Deployments register on a real Prefect server (the test harness) with their schedules."""

from __future__ import annotations

import asyncio


def test_train_deployment_registered_with_interval(prefect_harness, monkeypatch):
    from prefect.client.orchestration import get_client

    from flows.deployments import apply

    monkeypatch.setenv("TRAIN_INTERVAL_HOURS", "4")
    ids = apply("train")
    monkeypatch.undo()
    assert len(ids) == 3  # the churn sweep, the image sweep (on demand), the approval runs' deployment
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("train-churn-model/churn-sweep")
        assert dep.work_pool_name == "churn-local"
        assert dep.entrypoint == "flows/train_flow.py:train_flow"
        assert [s.schedule.interval.total_seconds() for s in dep.schedules] == [4 * 3600]
        assert client.read_work_pool("churn-local").type == "process"
    # what the server's scheduler service does with it (sqlalchemy 2.1 broke this silently:
    # "Can't evaluate bulk DML statement", and no scheduled deployment ever ran)
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.server.database import provide_database_interface
    from prefect.server.models.deployments import schedule_runs

    async def schedule():
        db = provide_database_interface()
        async with db.session_context(begin_transaction=True) as session:
            return await schedule_runs(session=session, deployment_id=dep.id)

    assert asyncio.run(schedule())
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
    assert runs and {r.state_type.value for r in runs} == {"SCHEDULED"}
    with get_client(sync_client=True) as client:  # on demand: started by the trigger, the UI, or a training run
        image = client.read_deployment_by_name("train-image-model/image-sweep")
        approval = client.read_deployment_by_name("approve-model/approval")
    assert image.entrypoint == "flows/image_train_flow.py:image_train_flow" and not image.schedules
    # the UI's quick run sends no parameters: none is required, the contract defaults to raw_digits
    schema = image.parameter_openapi_schema
    assert not schema.get("required") and schema["properties"]["contract"]["default"] == "raw_digits"
    assert approval.entrypoint == "flows/approval_flow.py:approve_model_flow" and not approval.schedules
