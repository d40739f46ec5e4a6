"""Prefect flow "prediction-report": Evidently report of the recent prediction window.

Thin over `reporting.report.build_report`. Deployed by flows/deployments.py (every
`report_interval_hours`); `make report` runs it now in this process:

    python -m flows.report_flow [--hours H]
"""

from __future__ import annotations

import argparse
import json

from prefect import flow

from churnops.approvals import sweep_quietly
from churnops.cli import fail, flow_logger, setup_logging
from churnops.contract import load_any_contract
from churnops.model_line import for_dataset
from churnops.settings import get_settings
from churnops.store.factory import open_store as _open

FLOW_NAME = "prediction-report"


def open_store(settings):
    return _open(settings)


@flow(name=FLOW_NAME, log_prints=True)
def report_flow(window_hours: float | None = None, dataset: str | None = None) -> dict:
    """Build the report of `dataset`'s predictions (default DATASET) for the last `window_hours`
    (default REPORT_WINDOW_HOURS); returns the summary headline."""
    from reporting.report import build_report

    s = for_dataset(get_settings(), dataset)  # the data set's own prediction log and model
    for ended in sweep_quietly(s):  # challengers whose approval run was cancelled or timed out
        flow_logger(__name__).info("approval ended without a decision: %s", json.dumps(ended))
    store = open_store(s)
    try:
        summary = build_report(store, s, load_any_contract(s.dataset), window_hours=window_hours)
    finally:
        store.close()
    out = {"id": summary["id"], "status": summary["status"], "files": summary["files"], **summary["headline"]}
    flow_logger(__name__).info("report %s: %s", out["id"], json.dumps(out, default=str))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description="build one prediction report now")
    p.add_argument("--hours", type=float, default=None, help="window length (default REPORT_WINDOW_HOURS)")
    a = p.parse_args()
    setup_logging()
    s = get_settings()
    try:
        out = report_flow(window_hours=a.hours)
    except Exception as exc:
        fail(exc, f"report flow {FLOW_NAME}")
    folder = s.state_path(s.reports_dir, "reports")
    print(f"{out['status']}: {out.get('message')}  n={out.get('n')} (window {out.get('n_window')})")
    if out["files"].get("html"):
        print(f"report  {folder / out['files']['html']}")
    print(f"index   {folder / 'index.html'}  ->  http://{s.reports_host}:{s.reports_port}/")


if __name__ == "__main__":
    main()
