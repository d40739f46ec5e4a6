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


def _entry(target: str):
    def main() -> None:
        _run(target)

    main.__doc__ = f"Console script: exports the dotenv file, then runs {target}."
    return main


# the console scripts of pyproject.toml ([project.scripts] churnops-<name> = "churnops.entry:<name>")
stack = _entry("churnops.stack:main")
init_aws = _entry("churnops.provision:main")
train = _entry("flows.train_flow:main")
deploy = _entry("flows.deployments:main")
pin = _entry("churnops.registry:pin_main")
rollback = _entry("churnops.registry:rollback_main")
promote = _entry("churnops.registry:promote_main")
collect_labels = _entry("flows.labels_flow:main")
report = _entry("flows.report_flow:main")
retrain = _entry("flows.retrain_flow:main")
simulate = _entry("simulators.run:main")
