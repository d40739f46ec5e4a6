"""`POST /predict`, `POST /predict/batch` and `POST /predict/image` (one view function per route).

`predict_body` is the whole of one prediction (JSON in, JSON out, logged): the `/predict` view and
the fast WSGI path in front of Flask (churnops/speed/wsgi.py, wired by create_app) both call it.
"""

from __future__ import annotations

import functools
import logging
import time

from flask import Blueprint, Flask, Response, request

from churnops.speed.columnar import ColumnBatch
from churnops.store.base import PredictionBatch
from serving import guards
from serving.answers import answers_for
from serving.columnar import from_rows, predict_columns
from serving.explain_http import check_rows, explain_groups, explain_one, wants_explanation, with_explanation
from serving.image_http import ROUTE as IMAGE_ROUTE
from serving.image_http import predict_image
from serving.inference import (
    BadInput,
    check_row,
    dumps,
    log_record,
    new_request_id,
    new_request_ids,
    parse_json,
    predict_rows,
    response_body,
    with_ignored,
)
from serving.routes.state import ServingState, serving_state

log = logging.getLogger(__name__)

predict_blueprint = Blueprint("predict", __name__)


def refuse_tabular(state: ServingState, path: str) -> None:
    """On a server of an image contract, the tabular routes answer 409 naming the image route."""
    c = state.image_contract
    if c is not None:
        raise BadInput(
            "this server serves an image model",
            {
                "path": f"{path} takes tabular features; DATASET={state.settings.dataset} is the image contract "
                f"{c.name!r}: POST {IMAGE_ROUTE} with the image as the body"
            },
            "wrong_task",
            409,
        )


def predict_body(state: ServingState, raw: bytes, explain: int | None = None) -> bytes:
    """One prediction: JSON body in, JSON response out (`explain`: top k of an explanation, serving/explain_http.py).
    Raises before anything is logged."""
    t0 = time.perf_counter()
    refuse_tabular(state, "/predict")  # image serving hook: 409 on an image server
    ms = state.current_models()
    row = check_row(parse_json(raw), state.contract, state.settings.unknown_category, validator=state.validator)
    m, p, d = predict_rows(ms, [row])[0]
    extra = {"explanation": explain_one(m, row.values, state.contract, explain)} if explain else {}
    latency = (time.perf_counter() - t0) * 1000
    out = dumps(response_body(row, m, p, d) | extra | {"latency_ms": round(latency, 3)})
    state.plog.submit(log_record(new_request_id(), row, m, p, d, "http", latency))  # own entry id, journaled
    if m.route == "champion" and state.shadow.enabled:  # the champion's answers only: champion + shadow
        state.shadow.offer_row(row.request_id, row.values, m.version)  # a non-blocking put
    try:
        task, child = (
            answers_for(m.bundle.task),
            state.child,
        )  # a classifier: decision and probability; a regression: value
        child(state.metrics.predictions, "http", m.route, str(m.version), task.decision_label(d)).inc()
        child(state.metrics.latency, "http", m.route).observe(latency / 1000)
        child(getattr(state.metrics, task.value_metric), m.route).observe(p)
    except Exception:  # metrics never fail a prediction that is already logged
        log.exception("updating prediction metrics failed")
    return out


def count_fast_answer(state: ServingState) -> None:
    """Count a `/predict` answered by the fast path in front of Flask (Flask's after_request does not see it)."""
    state.child(state.metrics.http_requests, "/predict", "POST", "200").inc()


def fast_path_accepts(state: ServingState, environ: dict) -> bool:
    """Whether the fast path may answer this request; else the Flask view answers (and its guards refuse)."""
    return (
        guards.check_host(environ.get("HTTP_HOST", ""), state.hosts) is None
        and guards.json_type_ok(environ.get("CONTENT_TYPE"))
        and "explain" not in environ.get("QUERY_STRING", "")  # ?explain=true: the Flask view answers
    )


def wrap_fast_path(app: Flask, state: ServingState) -> None:
    """Put `predict_body` in front of Flask for the common `POST /predict` (churnops/speed/wsgi.py);
    an image server has no tabular fast path."""
    if state.fast is None:
        return
    app.wsgi_app = state.fast.wrap_wsgi(
        app.wsgi_app,
        functools.partial(predict_body, state),
        state.settings.max_body_bytes,
        functools.partial(count_fast_answer, state),
        accept=functools.partial(fast_path_accepts, state),
    )


@predict_blueprint.post("/predict")
def predict():
    state = serving_state()
    body = predict_body(state, state.read_body(), wants_explanation(request.args))
    return Response(body, mimetype="application/json")


def batch_records(state: ServingState, raw: bytes) -> ColumnBatch:
    """The checked rows of a `/predict/batch` body (a JSON array, or `{"records": [...]}`); BadInput
    names every problem."""
    s = state.settings
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
    if len(set(batch.request_ids)) != batch.n:
        raise BadInput(
            "duplicate request_id in batch",
            {"request_id": "each row needs a distinct request_id"},
            "duplicate_request_id",
            422,
        )
    return batch


@predict_blueprint.post("/predict/batch")
def predict_batch():
    state = serving_state()
    t0 = time.perf_counter()
    refuse_tabular(state, "/predict/batch")  # image serving hook: 409 on an image server
    ms = state.current_models()
    batch = batch_records(state, state.read_body())
    n = batch.n
    groups = predict_columns(ms, batch)
    explain = wants_explanation(request.args)
    if explain:
        check_rows(n, state.settings.explain_max_rows)
    explained = explain_groups(groups, batch, state.contract, explain) if explain else None  # before logging
    latency = (time.perf_counter() - t0) * 1000
    now = time.time()
    out: list = [None] * n
    for m, idx, proba in groups:
        task = answers_for(m.bundle.task)  # what a prediction answers and logs (serving.answers)
        cols = task.output_columns(proba, m.threshold)
        rids = batch.request_ids if idx is None else [batch.request_ids[i] for i in idx.tolist()]
        state.plog.submit_batch(
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
                state.child(state.metrics.predictions, "http", m.route, str(m.version), d).inc(k)
    if explained is not None:
        out = [with_explanation(item, explained[i]) for i, item in enumerate(out)]
    for m, idx, _ in groups:  # the champion's rows only; a non-blocking put; SHADOW_FRACTION=0: nothing
        if m.route == "champion":
            state.shadow.offer_batch(batch.request_ids, batch.take, None if idx is None else idx.tolist())
    state.child(state.metrics.latency, "http_batch", "mixed").observe(latency / 1000)
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


predict_blueprint.add_url_rule(IMAGE_ROUTE, view_func=predict_image, methods=["POST"])
