"""Console entry points: telemetry off, `.env.<ENV>` exported into the environment, then the real main.

Prefect and MLflow read their URLs from the environment when first imported, so each entry point
exports the dotenv file (`churnops.settings.export_env`) BEFORE it imports its target: the imports
below sit inside the functions on purpose (the one module allowed to do so for project modules, see
`[tool.churnops.lazy-imports]` in pyproject.toml), and each console script loads only its own target
(`churnops-health` runs every few seconds in a container and must not import Prefect).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from churnops.settings import export_env, quiet_process


def _prepare() -> None:
    """Telemetry off, then the dotenv file exported (before Prefect or MLflow is imported)."""
    quiet_process()
    export_env()


def _exit(code: object) -> None:
    """An int returned by a main is the exit code."""
    if isinstance(code, int):
        sys.exit(code)


def _run(main: Callable[[], object]) -> None:
    _exit(main())


# ---- commands (make targets) -------------------------------------------------------------------
def stack() -> None:
    """churnops-stack: the embedded stack's supervisor (make up/down/status/logs)."""
    _prepare()
    from ops.stack import main

    _run(main)


def init_aws() -> None:
    """churnops-init-aws: bucket, streams, first snapshot."""
    _prepare()
    from ops.provision import main

    _run(main)


def train() -> None:
    """churnops-train: one training flow run."""
    _prepare()
    from flows.train_flow import main

    _run(main)


def deploy() -> None:
    """churnops-deploy: register the Prefect deployments."""
    _prepare()
    from flows.deployments import main

    _run(main)


def pin() -> None:
    """churnops-pin: the champion's RUN_ID into the dotenv file."""
    _prepare()
    from ops.registry_commands import pin_main

    _run(pin_main)


def rollback() -> None:
    """churnops-rollback: champion back, RUN_ID re-pinned."""
    _prepare()
    from ops.registry_commands import rollback_main

    _run(rollback_main)


def promote() -> None:
    """churnops-promote: a version made champion, RUN_ID re-pinned."""
    _prepare()
    from ops.registry_commands import promote_main

    _run(promote_main)


def collect_labels() -> None:
    """churnops-collect-labels: the delayed-labels flow."""
    _prepare()
    from flows.labels_flow import main

    _run(main)


def report() -> None:
    """churnops-report: one report flow run."""
    _prepare()
    from flows.report_flow import main

    _run(main)


def retrain() -> None:
    """churnops-retrain: the retrain trigger flow."""
    _prepare()
    from flows.retrain_flow import main

    _run(main)


def simulate() -> None:
    """churnops-simulate: one round of business traffic."""
    _prepare()
    from simulators.run import main

    _run(main)


def image_train() -> None:
    """make demo-image: the image training flow (the image extra)."""
    _prepare()
    from flows.image_train_flow import main

    _run(main)


# ---- long-running services: the embedded stack's supervisor and the Docker image run the same scripts
def moto() -> None:
    """churnops-moto: the S3/Kinesis endpoint."""
    _prepare()
    from ops.motoserver import main

    _run(main)


def mlflow() -> None:
    """churnops-mlflow: the MLflow tracking server."""
    _prepare()
    from ops.services import mlflow_main

    _run(mlflow_main)


def prefect_server() -> None:
    """churnops-prefect-server."""
    _prepare()
    from ops.services import prefect_server_main

    _run(prefect_server_main)


def prefect_worker() -> None:
    """churnops-prefect-worker."""
    _prepare()
    from ops.services import prefect_worker_main

    _run(prefect_worker_main)


def api() -> None:
    """churnops-api: the prediction API's server."""
    _prepare()
    from ops.services import api_main

    _run(api_main)


def api_proxy() -> None:
    """churnops-api-proxy: nginx in front of the API."""
    _prepare()
    from serving.proxy import main

    _run(main)


def consumer() -> None:
    """churnops-consumer: the stream consumer."""
    _prepare()
    from serving.consumer import main

    _run(main)


def reports() -> None:
    """churnops-reports: the reports web server."""
    _prepare()
    from reporting.webserver import main

    _run(main)


def simulate_http() -> None:
    """churnops-simulate-http: the HTTP simulator service."""
    _prepare()
    from ops.simulator_services import simulate_http_main

    _run(simulate_http_main)


def simulate_kinesis() -> None:
    """churnops-simulate-kinesis: the Kinesis simulator service."""
    _prepare()
    from ops.simulator_services import simulate_kinesis_main

    _run(simulate_kinesis_main)


def health() -> None:
    """churnops-health: the containers' health check."""
    _prepare()
    from ops.health import main

    _run(main)
