"""`GET /health`, `/ready`, `/metrics`, `/logs`, `/openapi.json` and the index page `/`."""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path

from flask import Blueprint, Response, jsonify, request

from churnops.redact import redact
from serving.image_http import image_openapi
from serving.inference import BadInput
from serving.metrics import render
from serving.openapi import cached_spec
from serving.routes.state import error_response, serving_state

ops_blueprint = Blueprint("ops", __name__)

INDEX_HTML = (Path(__file__).parent.parent / "index.html").read_text()
LOGS_MAX_LIMIT = 10_000


def parse_time(name: str, value: str | None) -> float | None:
    """A query parameter's time: UNIX seconds or ISO 8601 (UTC unless it says); None when absent."""
    if value is None or value == "":
        return None
    try:
        x = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(x):
            raise BadInput(
                "invalid query parameter", {name: f"expected a finite time, got {value[:40]!r}"}, "invalid_query", 422
            )
        return x
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadInput(
            "invalid query parameter",
            {name: f"expected UNIX seconds or ISO 8601, got {value[:40]!r}"},
            "invalid_query",
            422,
        ) from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


@ops_blueprint.get("/health")
def health():
    state = serving_state()
    plog = state.plog
    st = plog.status()
    return jsonify(
        {
            "status": "degraded" if st["degraded"] else "ok",
            "pid": os.getpid(),
            "model_loaded": state.models.ready,
            "store_ok": plog.store_ok,
            "log_pending": plog.pending(),
            "prediction_log": st,
        }
    )


@ops_blueprint.get("/ready")
def ready():
    models = serving_state().models
    if models.current is None:
        return error_response(503, "model not loaded", {"model": redact(models.last_error or "loading")})
    ms = models.current
    return jsonify({"status": "ready", "run_id": ms.champion.run_id, "version": ms.champion.version})


@ops_blueprint.get("/logs")
def logs():
    state = serving_state()
    a = request.args
    start, end = parse_time("start", a.get("start")), parse_time("end", a.get("end"))
    try:
        limit = int(a.get("limit", 100))
        if not 1 <= limit <= LOGS_MAX_LIMIT:
            raise ValueError
    except ValueError as exc:
        raise BadInput(
            "invalid query parameter",
            {"limit": f"expected an integer in 1..{LOGS_MAX_LIMIT}"},
            "invalid_query",
            422,
        ) from exc
    if start is not None and end is not None and end <= start:
        raise BadInput("invalid query parameter", {"end": "must be after start"}, "invalid_query", 422)
    try:
        records = state.store.find_predictions(start, end, limit)
    except Exception as exc:
        return error_response(503, "prediction store unavailable", {"store": f"{type(exc).__name__}: {str(exc)[:200]}"})
    return jsonify({"count": len(records), "start": start, "end": end, "limit": limit, "records": records})


@ops_blueprint.get("/metrics")
def metrics_endpoint():
    body, ctype = render()
    return Response(body, mimetype=None, content_type=ctype)


@ops_blueprint.get("/openapi.json")
def openapi():
    state = serving_state()
    if state.image_contract is not None:  # image serving hook
        return jsonify(image_openapi(state.image_contract))
    return jsonify(cached_spec(state.settings.dataset))


@ops_blueprint.get("/")
def index():
    return Response(INDEX_HTML, mimetype="text/html")
