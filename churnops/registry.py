"""MLflow registry access: register, move aliases, resolve what to serve, pin the champion."""

from __future__ import annotations

import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from churnops.model_line import FINGERPRINT_TAG, check_line, resolved
from churnops.model_uri import check_model_uri, check_run_id
from churnops.redact import redact
from churnops.settings import Settings, env_file, get_settings
from churnops.tracking import client

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, CANDIDATE = "champion", "challenger", "candidate"


class TrackingUnreachable(ConnectionError):
    """The MLflow tracking server did not answer."""


def check_tracking(settings: Settings | None = None, timeout: float = 5.0) -> None:
    """Fail fast, naming the URI, when the tracking server is not healthy."""
    s = settings or get_settings()
    uri = s.mlflow_tracking_uri
    if not uri.startswith("http"):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as r:  # noqa: S310
            if r.status != 200:
                raise TrackingUnreachable(f"MLflow server {redact(uri)} answered {r.status} on /health")
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingUnreachable(
            f"MLflow server {redact(uri)} unreachable ({redact(exc)}); start it with `make up`"
        ) from exc


def alias_version(name: str, alias: str, settings: Settings | None = None):
    """The ModelVersion behind `name@alias`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client(settings).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register(run_id: str, model_uri: str, settings: Settings | None = None, tags: dict | None = None):
    """Register `model_uri` under the data set's model name with the neutral alias `candidate`, and
    `champion` if there is none; `challenger` is the rules' to give (`churnops.governance.set_outcome`).

    `tags` must carry the contract fingerprint (`contract_fingerprint`): a name whose versions carry
    another one is refused (`churnops.model_line.ContractMismatch`), so one name holds one contract.
    Returns (version, aliases set). Called only after every check passed, so a failed run
    never registers anything nor moves an alias.
    """
    import mlflow

    s = resolved(settings or get_settings())
    fingerprint = (tags or {}).get(FINGERPRINT_TAG)
    if not fingerprint:
        raise ValueError(f"register {s.model_name}: the version's tags must name its `{FINGERPRINT_TAG}`")
    check_line(s.model_name, fingerprint, s)
    c = client(s)
    mlflow.set_registry_uri(s.mlflow_tracking_uri)
    mv = mlflow.register_model(model_uri, s.model_name, tags=tags or {})
    aliases = [CANDIDATE]
    c.set_registered_model_alias(s.model_name, CANDIDATE, mv.version)
    if alias_version(s.model_name, CHAMPION, s) is None:
        c.set_registered_model_alias(s.model_name, CHAMPION, mv.version)
        aliases.append(CHAMPION)
    log.info("registered %s version %s (run %s) aliases=%s", s.model_name, mv.version, run_id, aliases)
    return mv.version, aliases


def resolve_model_uri(settings: Settings | None = None) -> str:
    """What the servers load: `MODEL_URI` if set, else `runs:/<RUN_ID>/model`, else the champion.

    Checked against the allowlist of `churnops.model_uri` (raises `ModelUriError` naming
    MODEL_URI or RUN_ID).
    """
    s = resolved(settings or get_settings())
    if s.model_uri:
        return check_model_uri(s.model_uri, s, "MODEL_URI", allow_local=True)
    if s.run_id:
        return f"runs:/{check_run_id(s.run_id, 'RUN_ID')}/model"
    return f"models:/{s.model_name}@{CHAMPION}"


def bound_mlflow_http(settings: Settings | None = None) -> None:
    """Export the settings' MLflow HTTP timeout, retries and backoff for this (server) process.

    MLflow reads MLFLOW_HTTP_REQUEST_TIMEOUT / _MAX_RETRIES / _BACKOFF_FACTOR on every request;
    its defaults (120 s, 7 retries, factor 2) hold a call to an unreachable server for minutes.
    """
    s = settings or get_settings()
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, int(s.mlflow_http_request_timeout)))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(max(0, int(s.mlflow_http_request_max_retries)))
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(max(0, int(s.mlflow_http_request_backoff_factor)))


def pin_problem(settings: Settings | None = None) -> str | None:
    """Why the pinned RUN_ID cannot be served (the run is gone, e.g. after `make reset_all`), or None.

    None as well when nothing is pinned, the pin is a MODEL_URI, or the tracking server does not
    answer (the server then retries; this check is about pins that can never load).
    """
    from mlflow.exceptions import MlflowException

    s = settings or get_settings()
    if s.model_uri or not s.run_id:
        return None
    try:
        check_tracking(s, timeout=3.0)  # down: no verdict (the MLflow client would retry for minutes)
    except TrackingUnreachable:
        return None
    try:
        client(s).get_run(s.run_id)
    except MlflowException as exc:
        if (
            getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
            or "not found" in str(exc).lower()
        ):
            return (
                f"RUN_ID={s.run_id} pinned in {env_file()} does not exist in MLflow {s.mlflow_tracking_uri} "
                f"(state reset?): run `make pin` to pin the current champion"
            )
        return None
    except Exception:
        return None
    return None


def write_env_value(path: Path | None, key: str, value: str) -> None:
    """Set `KEY=value` in a dotenv file, replacing an existing line or appending one."""
    if path is None:
        raise ValueError(f"no dotenv file to write {key} into (ENV_FILE is empty): name one with ENV_FILE=path")
    text = path.read_text() if path.exists() else ""
    line = f"{key}={value}"
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=.*$", re.MULTILINE)
    text = (
        pattern.sub(line, text, count=1)
        if pattern.search(text)
        else (text.rstrip("\n") + "\n" + line + "\n").lstrip("\n")
    )
    path.write_text(text)


def pin_champion(settings: Settings | None = None, env_path: Path | None = None) -> str:
    """Write the champion's RUN_ID into `.env.local` (the seed project's pinning flow)."""
    s = resolved(settings or get_settings())
    mv = alias_version(s.model_name, CHAMPION, s)
    if mv is None:
        raise LookupError(f"no {s.model_name}@{CHAMPION} in {redact(s.mlflow_tracking_uri)}: run `make train` first")
    write_env_value(env_path or env_file(), "RUN_ID", mv.run_id)
    return mv.run_id
