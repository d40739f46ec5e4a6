"""Console entry points: load `.env.<ENV>` into the environment, then run the real main.

Prefect and MLflow clients read their URLs from the environment when first imported, so the
dotenv file is exported before anything imports them, and MLflow's telemetry and Prefect's
analytics are turned off first (`churnops.settings.quiet_process`).
"""

from __future__ import annotations

import sys
from importlib import import_module

from churnops.settings import export_env, quiet_process


def _run(target: str) -> None:
    """Telemetry off, export the dotenv file, then import and call `module:function` (an int return is the exit code)."""
    quiet_process()
    export_env()
    module, func = target.split(":")
    code = getattr(import_module(module), func)()
    if isinstance(code, int):
        sys.exit(code)


def _entry(target: str):
    def main() -> None:
        _run(target)

    main.__doc__ = f"Console script: exports the dotenv file, then runs {target}."
    return main


# the console scripts of pyproject.toml ([project.scripts] churnops-<name> = "ops.entry:<name>")
stack = _entry("ops.stack:main")
init_aws = _entry("ops.provision:main")
train = _entry("flows.train_flow:main")
deploy = _entry("flows.deployments:main")
pin = _entry("churnops.registry:pin_main")
rollback = _entry("churnops.registry:rollback_main")
promote = _entry("churnops.registry:promote_main")
collect_labels = _entry("flows.labels_flow:main")
report = _entry("flows.report_flow:main")
retrain = _entry("flows.retrain_flow:main")
simulate = _entry("simulators.run:main")

# long-running services: the embedded stack's supervisor and the Docker image run the same scripts
moto = _entry("ops.motoserver:main")
mlflow = _entry("ops.services:mlflow_main")
prefect_server = _entry("ops.services:prefect_server_main")
prefect_worker = _entry("ops.services:prefect_worker_main")
api = _entry("ops.services:api_main")
api_proxy = _entry("serving.proxy:main")
consumer = _entry("serving.consumer:main")
reports = _entry("reporting.webserver:main")
simulate_http = _entry("ops.services:simulate_http_main")
simulate_kinesis = _entry("ops.services:simulate_kinesis_main")
health = _entry("ops.health:main")
image_train = _entry("flows.image_train_flow:main")  # make demo-image (the image extra)
