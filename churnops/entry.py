"""Console entry points: load `.env.<ENV>` into the environment, then run the real main.

Prefect and MLflow clients read their URLs from the environment when first imported, so the
dotenv file is exported before anything imports them.
"""

from __future__ import annotations

import sys
from importlib import import_module

from churnops.settings import export_env


def _run(target: str) -> None:
    """Export the dotenv file, then import and call `module:function`; a returned int is the exit code."""
    export_env()
    module, func = target.split(":")
    code = getattr(import_module(module), func)()
    if isinstance(code, int):
        sys.exit(code)


def stack() -> None:
    _run("churnops.stack:main")


def init_aws() -> None:
    _run("churnops.provision:main")


def train() -> None:
    _run("flows.train_flow:main")


def deploy() -> None:
    _run("flows.deployments:main")


def pin() -> None:
    _run("churnops.registry:pin_main")


def rollback() -> None:
    _run("churnops.registry:rollback_main")


def report() -> None:
    _run("flows.report_flow:main")


def retrain() -> None:
    _run("flows.retrain_flow:main")


def simulate() -> None:
    _run("simulators.run:main")
