"""Prefect flow "retrain-trigger": start training when drift is critical or realized AUC is low.

Thin over `reporting.trigger.evaluate_window` (cooldown, reasons and alerts live there).
`start_training` is injectable for tests; by default the deployment
`train-churn-model/churn-sweep` is started without waiting (`run_deployment(..., timeout=0)`). On
an image contract the fresh labels become a new image data set version (flows/labels_flow.py) and
`train-image-model/image-sweep` is started on it.

    python -m flows.retrain_flow [--hours H] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow

from churnops.approvals import sweep_quietly
from churnops.cli import fail, flow_logger, setup_logging
from churnops.contract import load_any_contract
from churnops.model_line import for_dataset
from churnops.settings import get_settings
from flows.labels_flow import labels_collector
from flows.report_flow import open_store
from reporting.trigger import default_start_training, evaluate_window

FLOW_NAME = "retrain-trigger"


@flow(name=FLOW_NAME, log_prints=True)
def retrain_trigger_flow(
    window_hours: float | None = None, dry_run: bool = False, start_training: Any = None, dataset: str | None = None
) -> dict:
    """Evaluate the recent window of `dataset` (default DATASET); start that data set's training
    deployment when due. Returns the decision."""
    s = for_dataset(get_settings(), dataset)  # its own window, checkpoints and training deployment
    contract = load_any_contract(s.dataset)
    for ended in sweep_quietly(s):  # challengers whose approval run was cancelled or timed out
        flow_logger(__name__).info("approval ended without a decision: %s", json.dumps(ended))
    store = open_store(s)
    try:
        decision = evaluate_window(
            store,
            s,
            contract,
            window_hours=window_hours,
            start_training=start_training or default_start_training(s, labels_collector(s)),
            dry_run=dry_run,
        )
    finally:
        store.close()
    flow_logger(__name__).info("retrain trigger: %s", json.dumps(decision, default=str))
    return decision


def main() -> None:
    p = argparse.ArgumentParser(description="evaluate the retraining trigger now")
    p.add_argument("--hours", type=float, default=None)
    p.add_argument("--dry-run", action="store_true", help="decide and record, but do not start training")
    a = p.parse_args()
    setup_logging()
    try:
        d = retrain_trigger_flow(window_hours=a.hours, dry_run=a.dry_run)
    except Exception as exc:
        fail(exc, f"flow {FLOW_NAME}")
    print(f"{d['action']}: {'; '.join(d['reasons']) or 'no reason to retrain'}")


if __name__ == "__main__":
    main()
