"""Which model URIs the servers load: an allowlist, so no URI makes them call an arbitrary host.

Accepted: `runs:/<32-hex run id>/<artifact path>` and `models:/<configured MODEL_NAME>@<alias>`
or `models:/<configured MODEL_NAME>/<version>`. Anything else (`mlflow-artifacts://host:port/…`,
`http://…`, `file:…`, a local path, another model name) is refused with `ModelUriError`, both in
`POST /model/reload` and for `MODEL_URI` / `RUN_ID` in the settings. One exception, for the operator
only: `MODEL_URI` in the settings may name an existing local bundle folder by its absolute path
(offline serving, tests); a reload request never can.
"""

from __future__ import annotations

import re
from pathlib import Path

from churnops.model_line import resolved
from churnops.settings import Settings

RUN_ID = re.compile(r"[0-9a-f]{32}")
_RUNS = re.compile(r"runs:/(?P<run>[0-9a-f]{32})/(?P<path>[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*)")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,63}")
_VERSION = re.compile(r"[1-9][0-9]{0,9}")


class ModelUriError(ValueError):
    """A model URI or run id outside the allowlist; `field` names where it came from."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def accepted(s: Settings) -> str:
    """The accepted forms, for error messages and docs."""
    s = resolved(s)
    return f"runs:/<32-hex run id>/<artifact path>, models:/{s.model_name}@<alias> or models:/{s.model_name}/<version>"


def check_run_id(value: object, field: str = "run_id") -> str:
    """`value` when it is an MLflow run id (32 lowercase hex digits)."""
    if not isinstance(value, str) or not RUN_ID.fullmatch(value):
        shown = repr(value)[:60] if isinstance(value, str) else f"a {type(value).__name__}"
        raise ModelUriError(field, f"expected a 32-hex-digit MLflow run id, got {shown}")
    return value


def check_model_uri(value: object, s: Settings, field: str = "model_uri", allow_local: bool = False) -> str:
    """`value` when it is an accepted model URI, else `ModelUriError` saying what is accepted.

    `allow_local` (settings only, never a request): an absolute path to an existing folder is accepted too.
    """
    if allow_local and isinstance(value, str) and value.startswith("/") and Path(value).is_dir():
        return value
    if not isinstance(value, str):
        raise ModelUriError(field, f"expected a string ({accepted(s)}), got a {type(value).__name__}")
    m = _RUNS.fullmatch(value)
    if m and ".." not in m.group("path").split("/"):
        return value
    prefix = f"models:/{resolved(s).model_name}"
    if value.startswith(prefix):
        rest = value[len(prefix) :]
        if (rest.startswith("@") and _ALIAS.fullmatch(rest[1:])) or (
            rest.startswith("/") and _VERSION.fullmatch(rest[1:])
        ):
            return value
    raise ModelUriError(field, f"{value[:80]!r} is not accepted; expected {accepted(s)}")
