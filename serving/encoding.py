"""JSON bytes and text of the servers' answers: non-finite numbers become null (NaN is not JSON)."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson as _orjson  # fast JSON; the stdlib encoder is the fallback


def dumps(obj) -> bytes:
    """JSON bytes of a response body (non-finite numbers become null: NaN is not JSON)."""
    try:
        return _orjson.dumps(obj)  # writes null for NaN/Infinity
    except TypeError:
        pass
    return json_text(obj, default=str).encode()


def finite(obj: Any) -> Any:
    """`obj` with every NaN/Infinity float (in dicts, lists, tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_text(obj: Any, **kwargs) -> str:
    """`json.dumps` that never writes NaN/Infinity tokens (they become null); a retry only when present."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as exc:
        if "JSON compliant" not in str(exc):
            raise
        return json.dumps(finite(obj), allow_nan=False, **kwargs)
