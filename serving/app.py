"""Flask app factory of the prediction API (served by gunicorn; see serving/gunicorn_conf.py).

    gunicorn -c python:serving.gunicorn_conf "serving.app:create_app()"

Debug only: `python -m serving.app` runs Flask's development server.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from flask import Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from churnops.admin import admin_token, token_matches
from churnops.cli import setup_logging
from churnops.contract import load_contract
from churnops.image.feedback import ImageFeedback
from churnops.model_line import resolved
from churnops.model_uri import ModelUriError, check_model_uri, check_run_id
from churnops.monitoring.rejections import RejectionCounter
from churnops.redact import redact
from churnops.registry import bound_mlflow_http
from churnops.settings import Settings, get_settings
from churnops.speed import FastPaths
from churnops.store.base import PredictionBatch, PredictionStore
from churnops.store.factory import open_store
from churnops.tasks import task_for
from serving import guards
from serving.answers import answers_for
from serving.columnar import from_rows, predict_columns
from serving.drift import drift_blueprint
from serving.edge import read_capped
from serving.explain_http import check_rows, explain_groups, explain_one, wants_explanation, with_explanation
from serving.image_http import image_openapi, refuse_tabular, register_image_routes
from serving.inference import (
    REQUEST_ID_RULE,
    BadInput,
    check_row,
    dumps,
    json_text,
    log_record,
    new_request_id,
    new_request_ids,
    parse_json,
    predict_rows,
    response_body,
    valid_request_id,
    with_ignored,
)
from serving.metrics import get_metrics, render
from serving.model import ModelManager, ReloadBusy
from serving.oip import feedback_target, oip_blueprint
from serving.openapi import cached_spec
from serving.prediction_log import PredictionLog
from serving.shadow import ShadowMirror
from serving.tasks import image_contract

log = logging.getLogger(__name__)

INDEX_HTML = (Path(__file__).with_name("index.html")).read_text()
LOGS_MAX_LIMIT = 10_000

# every PredictionLog created in this process, closed by atexit / gunicorn worker_exit
_LOGS: list[PredictionLog] = []


def close_all_logs() -> None:
    while _LOGS:
        plog = _LOGS.pop()
        try:
            plog.close()
        except Exception:
            log.exception("flushing the prediction log at exit failed")


atexit.register(close_all_logs)


class ServingState:
    def __init__(self, settings: Settings, store: PredictionStore, plog: PredictionLog, models: ModelManager):
        self.settings = settings
        # image serving hook (serving/tasks.py): an image contract has no tabular validators
        self.image_contract = image_contract(settings)
        self.contract = load_contract(settings.dataset) if self.image_contract is None else None
        # answers, feedback per task; image serving hook: an image server's feedback is a class index or name
        self.task = answers_for(task_for(self.contract)) if self.contract is not None else ImageFeedback()
        self.store = store
        self.plog = plog
        self.models = models
        self.metrics = get_metrics()
        tabular = self.contract is not None  # image serving hook: no tabular contract on an image server
        self.compiled = self.contract.validator() if tabular else None  # the one validator (churnops.validator)
        self.fast = FastPaths.from_settings(self.contract, settings) if tabular else None  # FAST_PATHS=off: plain
        self.validator = self.fast.record if tabular else None
        self.admin_token = ""  # set by create_app (churnops.admin.admin_token)
        self.rejections: RejectionCounter | None = None  # set by create_app (churnops/monitoring/rejections.py)


def _err(status: int, error: str, details: dict | None = None) -> tuple[Response, int]:
    return jsonify({"error": error, "details": details or {}}), status


class FiniteJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, writing null for NaN/Infinity so that every answer is valid JSON."""

    def dumps(self, obj, **kwargs) -> str:
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        return json_text(obj, **kwargs)


def _parse_time(name: str, value: str | None) -> float | None:
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
    state.admin_token = token
    # SHADOW_FRACTION > 0: mirrors to the candidate after each answer (serving/shadow.py)
    state.shadow = ShadowMirror(s, plog, metrics, lambda: models.current)
    # rejected records counted by reason and field into the line's store (the window's data quality)
    state.rejections = RejectionCounter(store, state.contract.feature_names if state.contract else ())
    if start_background:
        plog.start()
        _LOGS.append(plog)
        state.rejections.start()
        atexit.register(state.rejections.close)
        if models.current is None:
            models.start_background()

    app = Flask(__name__)
    app.json = FiniteJSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = s.max_body_bytes
    app.json.sort_keys = False
    app.extensions["churn"] = state
    app.ready_check = lambda: models.current is not None  # type: ignore[attr-defined]  # read by the worker

    # ---- errors: always JSON, never a stack trace ----------------------------------------------
    @app.errorhandler(BadInput)
    def bad_input(e: BadInput):
        state.metrics.rejections.labels("http", e.reason).inc()
        if e.status < 500 and request.path.startswith("/predict"):  # a refused record, not a server state
            state.rejections.add("http", e.reason, e.details)
        return _err(e.status, e.error, e.details)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        details = {}
        if e.code == 413:
            limit = request.max_content_length or s.max_body_bytes  # a route may set its own (/predict/image)
            details = {"body": f"request body larger than the {limit} byte limit"}
            state.metrics.rejections.labels("http", "body_too_large").inc()
            if request.path.startswith("/predict"):
                state.rejections.add("http", "body_too_large")
        elif e.code == 405:
            details = {"method": f"{request.method} not allowed on {request.path}"}
        elif e.code == 404:
            details = {"path": f"{request.path} not found"}
        return _err(e.code or 500, e.name.lower(), details)

    @app.errorhandler(Exception)
    def unexpected(e: Exception):
        log.exception("unhandled error on %s", request.path)
        return _err(500, "internal error", {"exception": type(e).__name__})

    children: dict = {}  # labelled metric children, looked up once (labels() costs ~5 us per call)

    def child(metric, *labels):
        key = (id(metric), labels)
        c = children.get(key)
        if c is None:
            c = children[key] = metric.labels(*labels)
        return c

    @app.before_request
    def guard():
        """Host, content type and scope token of every request (serving/guards.py), before its view."""
        refusal = (
            guards.check_host(request.host, hosts)
            or guards.check_content_type(request.method, request.path, request.content_type)
            or guards.check_scope(
                guards.scope_of(request.method, request.path),
                guards.presented_token(request.headers),
                scopes,
                state.admin_token,
            )
        )
        if refusal is not None:
            state.metrics.rejections.labels("http", refusal.error.replace(" ", "_")).inc()
            return _err(refusal.status, refusal.error, refusal.details)
        return None

    @app.after_request
    def count(resp):
        try:
            ep = request.url_rule.rule if request.url_rule is not None else "unmatched"
            child(state.metrics.http_requests, ep, guards.method_label(request.method), str(resp.status_code)).inc()
        except Exception:
            pass
        return resp

    def read_body() -> bytes:
        n = request.content_length
        if n is None:  # chunked upload: all of it, or a 413 past MAX_BODY_BYTES
            return read_capped(request.environ["wsgi.input"], s.max_body_bytes)
        if n > s.max_body_bytes:
            raise RequestEntityTooLarge()
        # one read of the declared length: werkzeug's chunked readall costs ~3 us per batch row
        return request.environ["wsgi.input"].read(n)

    def body_json():
        return parse_json(read_body())

    def current_models():
        ms = models.current
        if ms is None:
            raise BadInput("model not loaded yet", {"model": redact(models.last_error or "loading")}, "not_ready", 503)
        return ms

    # ---- prediction ------------------------------------------------------------------------------
    def predict_body(raw: bytes, explain: int | None = None) -> bytes:
        """One prediction: JSON body in, JSON response out (`explain`: top k of an explanation).
        Raises before anything is logged."""
        t0 = time.perf_counter()
        refuse_tabular(state, "/predict")  # image serving hook: 409 on an image server
        ms = current_models()
        row = check_row(parse_json(raw), state.contract, s.unknown_category, validator=state.validator)
        m, p, d = predict_rows(ms, [row])[0]
        extra = {"explanation": explain_one(m, row.values, state.contract, explain)} if explain else {}
        latency = (time.perf_counter() - t0) * 1000
        out = dumps(response_body(row, m, p, d) | extra | {"latency_ms": round(latency, 3)})
        plog.submit(log_record(new_request_id(), row, m, p, d, "http", latency))  # own entry id, journaled
        if m.route == "champion":  # the champion's answers only: a pair is champion + shadow
            state.shadow.offer_row(row.request_id, row.values, m.version)  # a non-blocking put; 0: nothing
        try:
            task = answers_for(m.bundle.task)  # a classifier: decision 0/1 and the probability; a regression: its value
            child(state.metrics.predictions, "http", m.route, str(m.version), task.decision_label(d)).inc()
            child(state.metrics.latency, "http", m.route).observe(latency / 1000)
            child(getattr(state.metrics, task.value_metric), m.route).observe(p)
        except Exception:  # metrics never fail a prediction that is already logged
            log.exception("updating prediction metrics failed")
        return out

    @app.post("/predict")
    def predict():
        return Response(predict_body(read_body(), wants_explanation(request.args)), mimetype="application/json")

    # the same handler in front of Flask for the common case (see churnops/speed/wsgi.py)
    if state.fast is not None:  # image serving hook: an image server has no tabular fast path
        app.wsgi_app = state.fast.wrap_wsgi(
            app.wsgi_app,
            predict_body,
            s.max_body_bytes,
            lambda: child(state.metrics.http_requests, "/predict", "POST", "200").inc(),
            accept=lambda environ: (
                guards.check_host(environ.get("HTTP_HOST", ""), hosts) is None
                and guards.json_type_ok(environ.get("CONTENT_TYPE"))
                and "explain" not in environ.get("QUERY_STRING", "")
            ),  # else the Flask view answers (guard above; ?explain=true)
        )

    @app.post("/predict/batch")
    def predict_batch():
        t0 = time.perf_counter()
        refuse_tabular(state, "/predict/batch")  # image serving hook: 409 on an image server
        ms = current_models()
        raw = read_body()
        batch = state.fast.decode_batch(raw)  # fastest: exact contract rows, parsed and checked in one pass
        if batch is not None:
            data = batch.request_ids
        else:
            data = parse_json(raw)
            if isinstance(data, dict) and isinstance(data.get("records"), list):
                data = data["records"]
        if not isinstance(data, list):
            raise BadInput(
                "expected a JSON array of feature objects",
                {"body": f"expected an array, got {type(data).__name__}"},
                "not_array",
                422,
            )
        if not data:
            raise BadInput("empty batch", {"body": "expected at least one record"}, "empty_batch", 422)
        if len(data) > s.batch_row_limit:
            raise BadInput(
                "batch too large", {"body": f"{len(data)} rows > limit {s.batch_row_limit}"}, "batch_too_large", 413
            )
        if batch is None:
            batch = state.fast.check_batch(data)  # fast path: whole columns at once
        if batch is None:  # something is off: check row by row to name every problem
            rows, details, reason = [], {}, None
            for i, obj in enumerate(data):
                try:
                    rows.append(check_row(obj, state.contract, s.unknown_category, prefix=i, validator=state.validator))
                except BadInput as e:
                    details.update(e.details)
                    reason = reason or e.reason
            if details:
                raise BadInput(
                    f"invalid features in {len({k.split('.')[0] for k in details})} of {len(data)} rows",
                    details,
                    reason or "invalid",
                    422,
                )
            batch = from_rows(rows, state.compiled)
        n = batch.n
        if len(set(batch.request_ids)) != n:
            raise BadInput(
                "duplicate request_id in batch",
                {"request_id": "each row needs a distinct request_id"},
                "duplicate_request_id",
                422,
            )
        groups = predict_columns(ms, batch)
        explain = wants_explanation(request.args)
        if explain:
            check_rows(n, s.explain_max_rows)
        explained = explain_groups(groups, batch, state.contract, explain) if explain else None  # before logging
        latency = (time.perf_counter() - t0) * 1000
        now = time.time()
        out: list = [None] * n
        for m, idx, proba in groups:
            task = answers_for(m.bundle.task)  # what a prediction answers and logs (serving.answers)
            cols = task.output_columns(proba, m.threshold)
            rids = batch.request_ids if idx is None else [batch.request_ids[i] for i in idx.tolist()]
            plog.submit_batch(
                PredictionBatch(
                    const={
                        "ts": now,
                        "source": "http",
                        "model_run_id": m.run_id,
                        "model_version": m.version,
                        "route": m.route,
                        "latency_ms": round(latency / n, 3),
                        "batch": True,
                    },
                    cols={"_id": new_request_ids(len(rids)), "request_id": rids, **cols},
                    features=batch.columns if idx is None else batch.take(idx),
                )
            )
            positions = range(n) if idx is None else idx.tolist()
            for i, item in zip(positions, task.batch_items(rids, cols, m)):
                out[i] = item if i not in batch.ignored else with_ignored(item, batch.ignored[i])
            for d, k in task.decision_counts(cols).items():
                if k:
                    child(state.metrics.predictions, "http", m.route, str(m.version), d).inc(k)
        child(state.metrics.latency, "http_batch", "mixed").observe(latency / 1000)
        if explained is not None:
            out = [with_explanation(item, explained[i]) for i, item in enumerate(out)]
        for m, idx, _ in groups:  # the champion's rows only; a non-blocking put; SHADOW_FRACTION=0: nothing
            if m.route == "champion":
                state.shadow.offer_batch(batch.request_ids, batch.take, None if idx is None else idx.tolist())
        renamed = b',"renamed":' + dumps(batch.renamed) if batch.renamed else b""
        return Response(
            b'{"count":%d,"predictions":[' % n
            + b",".join(out)
            + b'],"latency_ms":'
            + dumps(round(latency, 3))
            + renamed
            + b"}",
            mimetype="application/json",
        )

    @app.post("/feedback")
    def feedback():
        data = body_json()
        if not isinstance(data, dict):
            raise BadInput(
                "expected a JSON object", {"body": f"expected an object, got {type(data).__name__}"}, "not_object", 422
            )
        nested = guards.nested_field(data)  # before any validator formats the value
        if nested is not None:
            raise BadInput(nested.error, nested.details, "invalid_feedback", nested.status)
        details = {}
        rid = data.get("request_id")
        if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not valid_request_id(str(rid)):
            details["request_id"] = REQUEST_ID_RULE  # the same rule as /predict
        # `model`: a model served under /v2, whose own line takes the label (serving/oip.py); else the default
        task, contract, flog = feedback_target(app.extensions["oip"], data, state)
        # classifiers: outcome 0/1 or a label; regressions: a finite `value` (churnops.tasks); images: a class
        outcome, problems, key = task.parse_feedback(data, contract)
        details |= problems
        if details:
            raise BadInput("invalid feedback", details, "invalid_feedback", 422)
        ts = time.time()
        rid = str(rid).strip()
        flog.submit_feedback(rid, outcome, ts)
        return jsonify({"request_id": rid, key: outcome, "ts": ts, "status": "accepted"}), 202

    # ---- operations ----------------------------------------------------------------------------------
    @app.get("/health")
    def health():
        st = plog.status()
        return jsonify(
            {
                "status": "degraded" if st["degraded"] else "ok",
                "pid": os.getpid(),
                "model_loaded": models.ready,
                "store_ok": plog.store_ok,
                "log_pending": plog.pending(),
                "prediction_log": st,
            }
        )

    @app.get("/ready")
    def ready():
        if models.current is None:
            return _err(503, "model not loaded", {"model": redact(models.last_error or "loading")})
        ms = models.current
        return jsonify({"status": "ready", "run_id": ms.champion.run_id, "version": ms.champion.version})

    @app.get("/model")
    def model_info():
        if models.current is None:
            return _err(503, "model not loaded", {"model": redact(models.last_error or "loading")})
        return jsonify(models.current.describe() | {"unknown_category": s.unknown_category, "pid": os.getpid()})

    def admin_denied() -> tuple[Response, int] | None:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("X-Admin-Token", "")
        if not token_matches(token, state.admin_token):
            return _err(
                401,
                "admin token required",
                {
                    "authorization": "send `Authorization: Bearer <ADMIN_TOKEN>` (the token `make up` "
                    "prints, kept in <state_dir>/admin_token unless ADMIN_TOKEN is set)"
                },
            )
        return None

    def reload_target(data: dict) -> tuple[str | None, str | None | bool]:
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

    @app.post("/model/reload")
    def reload_model():
        """Start a reload in the background: 202 + the job; the current model keeps serving."""
        denied = admin_denied()
        if denied:
            return denied
        raw = request.get_data(cache=False)
        data = parse_json(raw) if raw.strip() else {}
        if not isinstance(data, dict):
            raise BadInput("expected a JSON object", {"body": "expected an object"}, "not_object", 422)
        champion, challenger = reload_target(data)
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

    @app.get("/model/reload/<job_id>")
    def reload_status(job_id: str):
        denied = admin_denied()
        if denied:
            return denied
        job = models.reload_status(job_id)
        if job is None:
            return _err(404, "not found", {"reload": f"no reload {job_id[:40]!r}"})
        return jsonify({**job, "status_url": f"/model/reload/{job['id']}"})

    @app.get("/logs")
    def logs():
        a = request.args
        start, end = _parse_time("start", a.get("start")), _parse_time("end", a.get("end"))
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
            records = store.find_predictions(start, end, limit)
        except Exception as exc:
            return _err(503, "prediction store unavailable", {"store": f"{type(exc).__name__}: {str(exc)[:200]}"})
        return jsonify({"count": len(records), "start": start, "end": end, "limit": limit, "records": records})

    @app.get("/audit")
    def audit():
        """The governance audit trail (promotions, rollbacks, approvals), newest first, paged;
        `?model=<registered model name>` keeps that model's records only."""
        a = request.args
        bad = {}
        model = a.get("model")
        if model is not None and not (0 < len(model) <= 200):
            bad["model"] = "expected a registered model name (1..200 characters)"
        try:
            limit = int(a.get("limit", 50))
            if not 1 <= limit <= LOGS_MAX_LIMIT:
                raise ValueError
        except ValueError:
            bad["limit"] = f"expected an integer in 1..{LOGS_MAX_LIMIT}"
        offset = guards.int_param(a.get("offset"), 0, 0, guards.MAX_OFFSET)
        if offset is None:
            bad["offset"] = f"expected an integer in 0..{guards.MAX_OFFSET}"
        if bad:
            raise BadInput("invalid query parameter", bad, "invalid_query", 422)
        try:
            records = store.find_audit(limit, offset, model=model)
        except Exception as exc:
            return _err(503, "prediction store unavailable", {"store": f"{type(exc).__name__}: {str(exc)[:200]}"})
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

    @app.get("/metrics")
    def metrics_endpoint():
        body, ctype = render()
        return Response(body, mimetype=None, content_type=ctype)

    @app.get("/openapi.json")
    def openapi():
        if state.image_contract is not None:  # image serving hook
            return jsonify(image_openapi(state.image_contract))
        return jsonify(cached_spec(s.dataset))

    @app.get("/")
    def index():
        return Response(INDEX_HTML, mimetype="text/html")

    register_image_routes(app, state, current_models, child)  # POST /predict/image (serving/image_http.py)

    app.register_blueprint(drift_blueprint)
    app.register_blueprint(oip_blueprint(state, start=start_background))  # /v2 (serving/oip.py)

    return app


def main() -> None:  # debugging only: Flask's development server

    setup_logging()
    s = get_settings()
    create_app(s).run(host=s.api_host, port=s.api_port, debug=False)


if __name__ == "__main__":
    main()
