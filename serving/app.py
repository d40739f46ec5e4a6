"""Flask app factory of the prediction API (served by gunicorn; see serving/gunicorn_conf.py).

    gunicorn -c python:serving.gunicorn_conf "serving.app:create_app()"

Debug only: `python -m serving.app` runs Flask's development server.

`create_app` builds the app's one `ServingState` (serving/routes/state.py, on
`app.extensions["churn"]`), the error handlers and request guards, and registers the routes'
Blueprints (serving/routes/: predict, feedback, admin, ops; serving/drift.py).
"""

from __future__ import annotations

import atexit
import logging

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from churnops.admin import admin_token
from churnops.cli import setup_logging
from churnops.model_line import resolved
from churnops.monitoring.rejections import RejectionCounter
from churnops.registry import bound_mlflow_http
from churnops.settings import Settings, get_settings
from churnops.store.base import PredictionStore
from churnops.store.factory import open_store
from serving import guards
from serving.drift import drift_blueprint
from serving.inference import BadInput, json_text
from serving.metrics import get_metrics
from serving.model import ModelManager
from serving.oip import oip_blueprint, wrap_infer_fast_path
from serving.prediction_log import PredictionLog, close_at_exit
from serving.routes.admin import admin_blueprint
from serving.routes.feedback import feedback_blueprint
from serving.routes.ops import ops_blueprint
from serving.routes.predict import predict_blueprint, wrap_fast_path
from serving.routes.state import EXTENSION, ServingState, error_response, serving_state
from serving.shadow import ShadowMirror

__all__ = ["ServingState", "create_app"]

log = logging.getLogger(__name__)


class FiniteJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, writing null for NaN/Infinity so that every answer is valid JSON."""

    def dumps(self, obj, **kwargs) -> str:
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        return json_text(obj, **kwargs)


def create_app(
    settings: Settings | None = None,
    store: PredictionStore | None = None,
    models: ModelManager | None = None,
    start_background: bool = True,
) -> Flask:
    """Build the app. Nothing touches the network here: the model loads in a background thread."""
    s = resolved(settings or get_settings())  # the data set's model line (its model name)
    token = admin_token(s)  # refuses an unsafe ADMIN_TOKEN in env=cloud before anything starts
    scopes = {name: guards.scope_token(s, name) for name in ("read", "feedback")}  # likewise (serving/guards.py)
    hosts = guards.allowed_hosts(s)
    if start_background:  # a server process: its MLflow calls (background only) give up in seconds
        bound_mlflow_http(s)
    metrics = get_metrics()
    store = store or open_store(s)
    plog = PredictionLog(
        store,
        s.state_path(s.spool_dir, "spool"),
        s.log_batch_size,
        s.log_flush_interval_s,
        metrics=metrics,
        wake_records=s.log_wake_records,
        queue_max_records=s.log_queue_max_records,
        spool_max_bytes=s.spool_max_bytes,
        retry_max_s=s.log_retry_max_s,
        journal=s.log_journal,
    )
    models = models or ModelManager(s, metrics=metrics)
    state = ServingState(s, store, plog, models)
    state.admin_token, state.scopes, state.hosts = token, scopes, hosts
    # SHADOW_FRACTION > 0: mirrors to the candidate after each answer (serving/shadow.py)
    state.shadow = ShadowMirror(s, plog, metrics, lambda: models.current)
    # rejected records counted by reason and field into the line's store (the window's data quality)
    state.rejections = RejectionCounter(store, state.contract.feature_names if state.contract else ())
    if start_background:
        plog.start()
        close_at_exit(plog)  # flushed at exit (serving/prediction_log.py)
        state.rejections.start()
        atexit.register(state.rejections.close)
        if models.current is None:
            models.start_background()

    app = Flask(__name__)
    app.json = FiniteJSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = s.max_body_bytes
    app.json.sort_keys = False
    app.extensions[EXTENSION] = state
    app.ready_check = lambda: models.current is not None  # type: ignore[attr-defined]  # read by the worker
    app.register_error_handler(BadInput, bad_input)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected)
    app.before_request(guard)
    app.after_request(count)
    for bp in (predict_blueprint, feedback_blueprint, admin_blueprint, ops_blueprint, drift_blueprint):
        app.register_blueprint(bp)
    app.register_blueprint(oip_blueprint(state, start=start_background))  # /v2 (serving/oip.py)

    wrap_infer_fast_path(app, state)  # POST /v2/models/.../infer in front of Flask
    wrap_fast_path(app, state)  # POST /predict in front of Flask for the common case (checked first)
    return app


# ---- errors: always JSON, never a stack trace ------------------------------------------------------


def bad_input(e: BadInput):
    state = serving_state()
    state.metrics.rejections.labels("http", e.reason).inc()
    if e.status < 500 and request.path.startswith("/predict"):  # a refused record, not a server state
        state.rejections.add("http", e.reason, e.details)
    return error_response(e.status, e.error, e.details)


def http_error(e: HTTPException):
    details = {}
    if e.code == 413:
        state = serving_state()
        limit = request.max_content_length or state.settings.max_body_bytes  # a route may set its own
        details = {"body": f"request body larger than the {limit} byte limit"}
        state.metrics.rejections.labels("http", "body_too_large").inc()
        if request.path.startswith("/predict"):
            state.rejections.add("http", "body_too_large")
    elif e.code == 405:
        details = {"method": f"{request.method} not allowed on {request.path}"}
    elif e.code == 404:
        details = {"path": f"{request.path} not found"}
    return error_response(e.code or 500, e.name.lower(), details)


def unexpected(e: Exception):
    log.exception("unhandled error on %s", request.path)
    return error_response(500, "internal error", {"exception": type(e).__name__})


# ---- every request ------------------------------------------------------------------------------------


def guard():
    """Host, content type and scope token of every request (serving/guards.py), before its view."""
    state = serving_state()
    refusal = (
        guards.check_host(request.host, state.hosts)
        or guards.check_content_type(request.method, request.path, request.content_type)
        or guards.check_scope(
            guards.scope_of(request.method, request.path),
            guards.presented_token(request.headers),
            state.scopes,
            state.admin_token,
        )
    )
    if refusal is not None:
        state.metrics.rejections.labels("http", refusal.error.replace(" ", "_")).inc()
        return error_response(refusal.status, refusal.error, refusal.details)
    return None


def count(resp):
    """Count the answer in `churn_http_requests_total` by route rule, method and status."""
    try:
        state = serving_state()
        ep = request.url_rule.rule if request.url_rule is not None else "unmatched"
        state.child(state.metrics.http_requests, ep, guards.method_label(request.method), str(resp.status_code)).inc()
    except Exception:
        pass
    return resp


def main() -> None:  # debugging only: Flask's development server
    setup_logging()
    s = get_settings()
    create_app(s).run(host=s.api_host, port=s.api_port, debug=False)


if __name__ == "__main__":
    main()
