"""Small helpers shared by console entry points: logging and one-line failures."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from churnops.redact import redact


def setup_logging(level: str | None = None) -> None:
    # MLflow prints a "View run" URL line per finished run: 50 of them per sweep drown the progress bar
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.basicConfig(
        level=(level or os.environ.get("LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("botocore", "urllib3", "alembic", "httpx", "mlflow.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(exc: BaseException, what: str, code: int = 1) -> NoReturn:
    """Print `what failed: why` (the contract report in full) and exit; no stack trace."""
    msg = str(exc) or type(exc).__name__
    print(f"ERROR: {redact(what)} failed: {redact(msg)}", file=sys.stderr)
    if os.environ.get("DEBUG"):
        raise exc
    sys.exit(code)


def flow_logger(name: str) -> logging.Logger:
    """The Prefect run's logger inside a flow or task run; the module logger `name` outside one."""
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:
        return logging.getLogger(name)
