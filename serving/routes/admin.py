"""`GET /model`, `POST /model/reload` (admin token), `GET /model/reload/<id>` (admin token), `GET /audit`."""

from __future__ import annotations

import os

from flask import Blueprint, Response, jsonify, request

from churnops.admin import token_matches
from churnops.model_uri import ModelUriError, check_model_uri, check_run_id
from churnops.redact import redact
from churnops.settings import Settings
from serving import guards
from serving.inference import BadInput, parse_json
from serving.model import ReloadBusy
from serving.routes.state import ServingState, error_response, serving_state

admin_blueprint = Blueprint("admin", __name__)

AUDIT_MAX_LIMIT = 10_000


@admin_blueprint.get("/model")
def model_info():
    state = serving_state()
    models = state.models
    if models.current is None:
        return error_response(503, "model not loaded", {"model": redact(models.last_error or "loading")})
    return jsonify(
        models.current.describe() | {"unknown_category": state.settings.unknown_category, "pid": os.getpid()}
    )


def admin_denied(state: ServingState) -> tuple[Response, int] | None:
    """401 unless the request carries the admin token (`Authorization: Bearer` or `X-Admin-Token`)."""
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("X-Admin-Token", "")
    if not token_matches(token, state.admin_token):
        return error_response(
            401,
            "admin token required",
            {
                "authorization": "send `Authorization: Bearer <ADMIN_TOKEN>` (the token `make up` "
                "prints, kept in <state_dir>/admin_token unless ADMIN_TOKEN is set)"
            },
        )
    return None


def reload_target(data: dict, s: Settings) -> tuple[str | None, str | None | bool]:
    """(champion, challenger) of a reload body, checked against the model URI allowlist."""
    try:
        champion = data.get("model_uri")
        if champion is not None:
            champion = check_model_uri(champion, s, "model_uri")
            if data.get("run_id") is not None:
                raise ModelUriError("run_id", "send model_uri or run_id, not both")
        elif data.get("run_id") is not None:
            champion = f"runs:/{check_run_id(data['run_id'], 'run_id')}/model"
        challenger = data.get("challenger_uri", True)
        if challenger is False:
            challenger = None
        elif challenger is not None and challenger is not True:
            challenger = check_model_uri(challenger, s, "challenger_uri")
    except ModelUriError as exc:
        raise BadInput("invalid reload request", {exc.field: exc.message}, "invalid_model_uri", 422) from exc
    return champion, challenger


@admin_blueprint.post("/model/reload")
def reload_model():
    """Start a reload in the background: 202 + the job; the current model keeps serving."""
    state = serving_state()
    denied = admin_denied(state)
    if denied:
        return denied
    raw = request.get_data(cache=False)
    data = parse_json(raw) if raw.strip() else {}
    if not isinstance(data, dict):
        raise BadInput("expected a JSON object", {"body": "expected an object"}, "not_object", 422)
    champion, challenger = reload_target(data, state.settings)
    models = state.models
    old = models.current
    serving = old.champion.uri if old else None
    try:
        job = models.submit_reload(champion, challenger)
    except ReloadBusy as exc:
        url = f"/model/reload/{exc.job['id']}"
        return jsonify(
            {"error": "a reload is already pending", "details": {"reload": url}, **exc.job, "status_url": url}
        ), 409
    url = f"/model/reload/{job['id']}"
    resp = jsonify({**job, "status_url": url, "serving": serving})
    resp.headers["Location"] = url
    return resp, 202


@admin_blueprint.get("/model/reload/<job_id>")
def reload_status(job_id: str):
    state = serving_state()
    denied = admin_denied(state)
    if denied:
        return denied
    job = state.models.reload_status(job_id)
    if job is None:
        return error_response(404, "not found", {"reload": f"no reload {job_id[:40]!r}"})
    return jsonify({**job, "status_url": f"/model/reload/{job['id']}"})


@admin_blueprint.get("/audit")
def audit():
    """The governance audit trail (promotions, rollbacks, approvals), newest first, paged;
    `?model=<registered model name>` keeps that model's records only."""
    state = serving_state()
    a = request.args
    bad = {}
    model = a.get("model")
    if model is not None and not (0 < len(model) <= 200):
        bad["model"] = "expected a registered model name (1..200 characters)"
    try:
        limit = int(a.get("limit", 50))
        if not 1 <= limit <= AUDIT_MAX_LIMIT:
            raise ValueError
    except ValueError:
        bad["limit"] = f"expected an integer in 1..{AUDIT_MAX_LIMIT}"
    offset = guards.int_param(a.get("offset"), 0, 0, guards.MAX_OFFSET)
    if offset is None:
        bad["offset"] = f"expected an integer in 0..{guards.MAX_OFFSET}"
    if bad:
        raise BadInput("invalid query parameter", bad, "invalid_query", 422)
    try:
        records = state.store.find_audit(limit, offset, model=model)
    except Exception as exc:
        return error_response(503, "prediction store unavailable", {"store": f"{type(exc).__name__}: {str(exc)[:200]}"})
    nxt = offset + limit if len(records) == limit else None
    return jsonify(
        {
            "count": len(records),
            "limit": limit,
            "offset": offset,
            "next_offset": nxt,
            "model": model,
            "records": records,
        }
    )
