"""Deployments register on a real Prefect server (the test harness) with their schedules."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_train_deployment_registered_with_interval(prefect_harness, monkeypatch):
    from prefect.client.orchestration import get_client

    from churnops.settings import get_settings
    from flows.deployments import apply

    monkeypatch.setenv("TRAIN_INTERVAL_HOURS", "4")
    get_settings.cache_clear()
    try:
        ids = apply("train")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert len(ids) == 1
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("train-churn-model/churn-sweep")
        assert dep.work_pool_name == "churn-local"
        assert dep.entrypoint == "flows/train_flow.py:train_flow"
        assert [s.schedule.interval.total_seconds() for s in dep.schedules] == [4 * 3600]
        assert client.read_work_pool("churn-local").type == "process"
