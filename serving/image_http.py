"""`POST /predict/image` on the HTTP API (a view of the predict blueprint, serving/routes/predict.py).

The body is the image itself (`Content-Type: image/x-adobe-dng | image/png | image/jpeg`) or
`multipart/form-data` with one file part (its own content type, else its bytes tell). The request id
comes from the `X-Request-ID` header, a `request_id` query parameter or form field, else is made up.
Bodies over IMAGE_MAX_BODY_BYTES get 413 from their Content-Length, unread. The answer: class,
class index, probabilities per class, model name/version/run, route, request_id, latency; the
prediction is logged (serving/image.py `log_entry`: an image summary, never the pixels). With
IMAGE_KEEP_UPLOADS=true the image itself is kept in the feature store under its SHA-256 and the log
record names it in `image_uri` (churnops/image/uploads.py, with a retention limit).

Servers of a tabular contract answer this route 409, and image servers answer the tabular routes
409 (`refuse_tabular` in serving/routes/predict.py), each naming the route that serves.
"""

from __future__ import annotations

import time

from flask import Response, request

from serving.explain_http import check_explainable, wants_explanation
from serving.image import CONTENT_TYPES, answer, content_type_of, decode, log_entry, predict
from serving.inference import REQUEST_ID_RULE, BadInput, dumps, new_request_id, valid_request_id
from serving.oip_openapi import oip_paths
from serving.routes.state import serving_state

ROUTE = "/predict/image"


def _request_id(form_value: str | None = None) -> str:
    rid = request.headers.get("X-Request-ID") or request.args.get("request_id") or form_value
    if rid is None or rid == "":
        return new_request_id()
    rid = rid.strip()
    if not valid_request_id(rid):
        raise BadInput("invalid request_id", {"request_id": REQUEST_ID_RULE}, "invalid_request_id", 422)
    return rid


def _image_bytes(limit: int) -> tuple[bytes, str | None, str, str | None]:
    """(bytes, declared content type or None to sniff, field name, form request_id) of the request."""
    mimetype = (request.mimetype or "").lower()
    if mimetype == "multipart/form-data":
        files = [f for f in request.files.values() if f is not None]
        if not files:
            raise BadInput(
                "multipart body without a file",
                {"file": "send one file part with the image (e.g. curl -F file=@digit.dng)"},
                "no_file",
                422,
            )
        if len(files) > 1:
            raise BadInput(
                "more than one file", {"file": f"send one file part, got {len(files)}"}, "too_many_files", 422
            )
        f = files[0]
        data = f.stream.read(limit + 1)
        if len(data) > limit:
            raise BadInput(
                "image too large",
                {"file": f"larger than the {limit} byte limit (IMAGE_MAX_BODY_BYTES)"},
                "body_too_large",
                413,
            )
        declared = content_type_of(f.mimetype)
        return (
            data,
            declared if declared in CONTENT_TYPES else None,
            f"file {f.filename or f.name!r}",
            request.form.get("request_id"),
        )
    if not mimetype:
        raise BadInput(
            "missing Content-Type",
            {"content-type": f"send the image with Content-Type {', '.join(CONTENT_TYPES)} or multipart/form-data"},
            "unsupported_media_type",
            415,
        )
    declared = content_type_of(mimetype)
    if declared not in CONTENT_TYPES:
        raise BadInput(
            "unsupported content type",
            {"content-type": f"{mimetype!r} is not one of {', '.join(CONTENT_TYPES)} or multipart/form-data"},
            "unsupported_media_type",
            415,
        )
    return request.get_data(cache=False), declared, "body", None


def predict_image():
    """`POST /predict/image` (a view of serving/routes/predict.py's blueprint)."""
    state = serving_state()
    s, child, keeper = state.settings, state.child, state.upload_keeper
    t0 = time.perf_counter()
    contract = state.image_contract
    if contract is None:
        raise BadInput(
            "this server serves a tabular model",
            {"path": f"{ROUTE} needs DATASET=<an image contract>; DATASET={s.dataset}: POST /predict with features"},
            "wrong_task",
            409,
        )
    if wants_explanation(request.args):  # the CNN has no trees: a 422 naming why (serving/explain_http.py)
        check_explainable(state.current_models().champion)
    limit = int(s.image_max_body_bytes)
    request.max_content_length = limit  # this route's own limit (chunked and multipart reads stop there)
    n = request.content_length
    if n is not None and n > limit:  # refused from the header: the body is never read
        raise BadInput(
            "image too large",
            {"body": f"{n} bytes > the {limit} byte limit (IMAGE_MAX_BODY_BYTES)"},
            "body_too_large",
            413,
        )
    data, declared, name, form_rid = _image_bytes(limit)
    rid = _request_id(form_rid)
    ms = state.current_models()
    img = decode(data, declared, contract, name)
    pred = predict(ms, rid, img)
    latency = (time.perf_counter() - t0) * 1000
    out = answer(pred, rid) | {"latency_ms": round(latency, 3)}
    kept = {}
    if keeper is not None and (uri := keeper.keep(data, img.sha256, img.content_type)):
        kept = {"image_uri": uri}  # as a stream record's: what /feedback labels are joined to
    state.plog.submit(log_entry(new_request_id(), rid, pred, img, "http", latency, **kept))
    m = pred.model
    try:
        child(state.metrics.predictions, "http", m.route, str(m.version), pred.label).inc()
        child(state.metrics.latency, "http_image", m.route).observe(latency / 1000)
    except Exception:  # metrics never fail a prediction that is already logged
        pass
    return Response(dumps(out), mimetype="application/json")


def image_openapi(contract) -> dict:
    """The OpenAPI document of an image server: `POST /predict/image` (the tabular routes answer 409)."""
    image = {"schema": {"type": "string", "format": "binary"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": f"ChurnOps image API ({contract.name})", "version": "1"},
        "paths": {
            ROUTE: {
                "post": {
                    "summary": f"Classify one {contract.image.width}x{contract.image.height} image",
                    "parameters": [
                        {"name": "X-Request-ID", "in": "header", "required": False, "schema": {"type": "string"}}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {t: image for t in CONTENT_TYPES}
                        | {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"file": {"type": "string", "format": "binary"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {"description": "class, probabilities per class, model name/version, request_id"},
                        "400": {"description": "empty body"},
                        "409": {"description": "this server serves a tabular model"},
                        "413": {"description": "body over IMAGE_MAX_BODY_BYTES"},
                        "415": {"description": "missing, unsupported or mismatching Content-Type"},
                        "422": {"description": "not an image, unreadable, unsupported CFA, wrong size"},
                    },
                }
            },
            **oip_paths(),  # the Open Inference Protocol routes (serving/oip.py)
        },
    }
