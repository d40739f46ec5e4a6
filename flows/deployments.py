"""Every Prefect deployment of the project, declared in one place.

`churnops-deploy train` (make apply-model-train-flow [DATASET=...]) and `churnops-deploy report`
(make apply-prediction-reporting [DATASET=...]) register those of one data set (see `specs`) with the Prefect server in `PREFECT_API_URL`
on the process work pool `WORK_POOL` (created if missing). A worker polling that pool runs
them: on the embedded stack the supervisor starts one; on other machines start more with
`prefect worker start --pool <WORK_POOL>` against the same server (see README).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from datetime import timedelta

from churnops.cli import fail, setup_logging
from churnops.contract import load_any_contract
from churnops.model_line import CHURN_CONTRACT, CHURN_DEPLOYMENT, TRAIN_FLOW, deployment_name_for
from churnops.settings import PROJECT_ROOT, Settings, get_settings


@dataclass(frozen=True)
class DeploymentSpec:
    group: str  # the make target's group: "train" or "report" ("approval" is applied with "train")
    entrypoint: str  # path:function, relative to the project root
    name: str  # deployment name (flow-name/deployment-name in the UI)
    interval_hours: float | None  # None: no schedule (started by other flows)
    parameters: dict = field(default_factory=dict)
    description: str = ""


def specs(s: Settings) -> list[DeploymentSpec]:
    """The deployments of the data set DATASET names: training, report and retrain trigger, each
    with the data set as its default parameter (so a quick run from the Prefect UI trains, reports
    on and watches that data set). The churn line keeps its names (`train-churn-model/churn-sweep`,
    `prediction-report/prediction-report`, `retrain-trigger/retrain-trigger`); another data set's
    are `train-churn-model/<dataset>`, `prediction-report/prediction-report-<dataset>` and
    `retrain-trigger/retrain-trigger-<dataset>`."""
    contract = load_any_contract(s.dataset)
    line = deployment_name_for(contract)
    suffix = "" if contract.name == CHURN_CONTRACT else f"-{contract.name}"
    params = {"dataset": s.dataset}
    return [
        DeploymentSpec(
            "train",
            "flows/train_flow.py:train_flow",
            line,
            s.train_interval_hours,
            params,
            f"{contract.name}: hyperopt sweep -> MLflow runs -> register the best; rules decide its outcome",
        ),
        DeploymentSpec(
            "train",
            "flows/image_train_flow.py:image_train_flow",
            "image-sweep",
            None,
            {},
            "image CNN sweep (contract raw_digits by default; `data` an s3:// data set version) -> rules -> approval",
        ),
        DeploymentSpec(
            "approval",
            "flows/approval_flow.py:approve_model_flow",
            "approval",
            None,
            {},
            "a challenger that passed every rule, suspended until a person approves or rejects it",
        ),
        DeploymentSpec(
            "report",
            "flows/report_flow.py:report_flow",
            f"prediction-report{suffix}",
            s.report_interval_hours,
            params,
            f"{contract.name}: Evidently report of the logged predictions vs the training reference",
        ),
        DeploymentSpec(
            "report",
            "flows/retrain_flow.py:retrain_trigger_flow",
            f"retrain-trigger{suffix}",
            0.5,
            params,
            f"{contract.name}: start training when drift is critical or the realized metric is off",
        ),
    ]


TRAIN_DEPLOYMENT = f"{TRAIN_FLOW}/{CHURN_DEPLOYMENT}"  # the churn line's (model_line.for_dataset gives any line's)


def ensure_work_pool(name: str) -> bool:
    """Create the process work pool if missing; True when created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            return True
        except ObjectAlreadyExists:
            return False


def apply(group: str, s: Settings | None = None) -> list[str]:
    """Register the deployments of `group` ("train", "report" or "all"); returns their ids."""
    from prefect import flow as prefect_flow

    s = s or get_settings()
    ensure_work_pool(s.work_pool)
    ids = []
    for spec in specs(s):
        if group not in ("all", spec.group) and not (group == "train" and spec.group == "approval"):
            continue
        f = prefect_flow.from_source(source=str(PROJECT_ROOT), entrypoint=spec.entrypoint)
        # to_deployment + apply, not flow.deploy: deploy() queries online workers with a null
        # limit that prefect 3.8.8's server rejects (422); apply() registers the same thing
        dep = f.to_deployment(
            name=spec.name,
            work_pool_name=s.work_pool,
            interval=None if spec.interval_hours is None else timedelta(hours=spec.interval_hours),
            parameters=spec.parameters,
            description=spec.description,
        )
        dep_id = dep.apply()
        when = "on demand" if spec.interval_hours is None else f"every {spec.interval_hours:g} h"
        print(f"deployment {f.name}/{spec.name} {when} on pool {s.work_pool} ({dep_id})")
        ids.append(str(dep_id))
    return ids


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("group", choices=["train", "report", "all"])
    args = p.parse_args(argv)
    setup_logging("WARNING")
    try:
        apply(args.group)
    except Exception as exc:
        fail(exc, f"registering {args.group} deployments with {get_settings().prefect_api_url}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
