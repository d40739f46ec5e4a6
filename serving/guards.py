"""Checks every request of the HTTP API passes before its view runs (registered by serving/app.py).

* **Host**: the `Host` header must name one of ALLOWED_HOSTS (default: the loopback names, the
  API's own host and the host of API_URL), else 400 naming the host (DNS rebinding: a page on
  another site that resolves its name to 127.0.0.1 cannot talk to the API).
* **Content type**: `POST /predict`, `/predict/batch` and `/feedback` take `application/json` only
  (415 naming it): `text/plain` and form bodies, which a browser posts cross-site without a
  preflight, are refused. The image route keeps its image and multipart types.
* **Scopes** (`Scope`): reading (`GET /logs`, `/audit`, `/drift/report`, `/model`) needs READ_TOKEN
  and `POST /feedback` needs FEEDBACK_TOKEN when they are set; with `env=cloud` both must be set
  (16+ characters, see `scope_tokens`). The admin token works for every scope. Tokens are compared
  in constant time and never appear in an answer or a log line.
* **Metric labels**: `method_label` maps an HTTP method to one of a fixed set ("other" else), so a
  client inventing methods cannot create metric series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from churnops.admin import MIN_CLOUD_LENGTH, token_matches
from churnops.settings import Settings

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
JSON_ROUTES = frozenset({"/predict", "/predict/batch", "/feedback"})
JSON_TYPE = "application/json"
READ_ROUTES = frozenset({"/logs", "/audit", "/drift/report", "/model"})
FEEDBACK_ROUTES = frozenset({"/feedback"})
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
FEEDBACK_FIELDS = ("request_id", "outcome", "actual", "label", "value")
MAX_OFFSET = 1_000_000_000  # /audit?offset= beyond this is a 422 (the store's integer would overflow)


class TokenError(ValueError):
    """A scope's token is unsafe for the environment (env=cloud without one, too short)."""


@dataclass(frozen=True)
class Refusal:
    """An answer a guard gives instead of the view: status, error, details by field."""

    status: int
    error: str
    details: dict[str, str]


def method_label(method: str | None) -> str:
    """The request method as a metric label: one of `KNOWN_METHODS`, else "other"."""
    m = (method or "").upper()
    return m if m in KNOWN_METHODS else "other"


# ---- Host --------------------------------------------------------------------------------------------


def host_name(host: str) -> str:
    """`Host` header -> the bare lower-case name (port and IPv6 brackets removed)."""
    h = (host or "").strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def allowed_hosts(s: Settings) -> frozenset[str]:
    """ALLOWED_HOSTS (comma-separated names; `*` allows every host), else the loopback names, API_HOST
    (unless a wildcard bind address) and the host of API_URL."""
    configured = [h.strip().lower() for h in (s.allowed_hosts or "").split(",") if h.strip()]
    if configured:
        return frozenset(host_name(h) if h != "*" else h for h in configured)
    names = set(LOOPBACK_HOSTS)
    if s.api_host and s.api_host not in ("0.0.0.0", "::"):
        names.add(host_name(s.api_host))
    api = urlsplit(s.api_url or "").hostname
    if api:
        names.add(api.lower())
    return frozenset(names)


def check_host(host: str | None, allowed: frozenset[str]) -> Refusal | None:
    """None when `host` is allowed, else the 400 naming it."""
    if "*" in allowed:
        return None
    name = host_name(host or "")
    if name and name in allowed:
        return None
    shown = (host or "")[:100]
    return Refusal(
        400,
        "host not allowed",
        {"host": f"Host {shown!r} is not one of {sorted(allowed)} (ALLOWED_HOSTS)"},
    )


# ---- content type --------------------------------------------------------------------------------------


def json_type_ok(content_type: str | None) -> bool:
    """True for `application/json` (parameters such as `; charset=utf-8` allowed)."""
    return (content_type or "").split(";", 1)[0].strip().lower() == JSON_TYPE


def check_content_type(method: str, path: str, content_type: str | None) -> Refusal | None:
    """None unless a JSON route is posted another type: then the 415 naming the expected one."""
    if method != "POST" or path not in JSON_ROUTES or json_type_ok(content_type):
        return None
    got = (content_type or "").split(";", 1)[0].strip()[:80] or "none"
    return Refusal(
        415,
        "unsupported media type",
        {"content-type": f"POST {path} takes Content-Type: {JSON_TYPE}, got {got}"},
    )


# ---- scopes ----------------------------------------------------------------------------------------------


def scope_token(s: Settings, name: str) -> str:
    """The token of scope `name` ("read" or "feedback"): READ_TOKEN / FEEDBACK_TOKEN, "" = open.

    In env=cloud an empty or short one raises `TokenError` (the server does not start)."""
    secret = getattr(s, f"{name}_token")
    value = (secret.get_secret_value() if secret is not None else "").strip()
    if s.env == "cloud" and len(value) < MIN_CLOUD_LENGTH:
        raise TokenError(
            f"{name.upper()}_TOKEN must be set in env=cloud to a secret of at least {MIN_CLOUD_LENGTH} "
            "characters; generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value


def presented_token(headers) -> str:
    """The token a request presents: `Authorization: Bearer <token>`, else `X-Api-Token`."""
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("X-Api-Token", "").strip()


def scope_of(method: str, path: str) -> str | None:
    """ "read", "feedback" or None (no scope token needed) for a request."""
    if method in ("GET", "HEAD") and path in READ_ROUTES:
        return "read"
    if method == "POST" and path in FEEDBACK_ROUTES:
        return "feedback"
    return None


def check_scope(scope: str | None, presented: str, tokens: dict[str, str], admin: str) -> Refusal | None:
    """None when the scope is open or `presented` matches its token or the admin token (constant time)."""
    if scope is None or not tokens.get(scope):
        return None
    if token_matches(presented, tokens[scope]) or token_matches(presented, admin):
        return None
    env_name = f"{scope.upper()}_TOKEN"
    return Refusal(401, f"{scope} token required", {"authorization": f"send `Authorization: Bearer <{env_name}>`"})


# ---- bodies and query parameters ------------------------------------------------------------------------------


def nested_field(data: dict, fields: tuple[str, ...] = FEEDBACK_FIELDS) -> Refusal | None:
    """422 naming the first of `fields` whose value is an object or an array (feedback fields are scalars:
    a label nested 1,000 deep would reach `str()` in the validator and raise RecursionError)."""
    for f in fields:
        v = data.get(f)
        if isinstance(v, (dict, list)):
            kind = "object" if isinstance(v, dict) else "array"
            return Refusal(422, "invalid feedback", {f: f"expected a string, number or boolean, got an {kind}"})
    return None


def int_param(raw: str | None, default: int, lo: int, hi: int) -> int | None:
    """The query parameter as an integer in [lo, hi] (`1e3`-style integers accepted), else None."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        try:
            x = float(raw)
        except ValueError:
            return None
        if not math.isfinite(x) or not x.is_integer():
            return None
        value = int(x)
    return value if lo <= value <= hi else None


def as_details(refusal: Refusal) -> dict[str, Any]:
    return {"error": refusal.error, "details": refusal.details}
