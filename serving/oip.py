"""Open Inference Protocol (KServe v2) routes of the HTTP API, for every model the server lists.

    GET  /v2/health/live                  200 {"live": true}
    GET  /v2/health/ready                 200 {"ready": true} once every model is loaded, else 503
    GET  /v2                              server metadata: name, version, extensions
    GET  /v2/models/{name}[/versions/{v}]           model metadata: inputs/outputs from the contract
    GET  /v2/models/{name}[/versions/{v}]/ready     200 {"ready": true}, 503 {"ready": false}
    POST /v2/models/{name}[/versions/{v}]/infer     named input tensors -> the selected outputs

The models: the server's default one (DATASET's line, the one `/predict` serves) plus OIP_MODELS
(serving/oip_models.py), each under its registered model name. A tabular model takes one tensor per
contract feature, shape `[n]` (or `[n, 1]`): numeric features FP64 (FP32 and integer types accepted),
categorical and ordinal ones BYTES; or one tensor `features`, `[n, k]` with the columns in contract
order (FP64 when every feature is numeric, else BYTES with numbers as text). The rows go through the
contract's validator exactly like `/predict`'s bodies. An image model takes `image`, UINT8 `[n, H, W, 3]` (RGB pixels; a PNG's pixels give
what `/predict/image` gives for that PNG). `outputs` selects among the model's outputs (`OUTPUTS`, a
dict of output name -> how it is computed, per task). `parameters.request_ids` (n strings) names the
rows for /feedback; else a one-row request takes its `id` (when a valid request id), else new ids; the
answer's `parameters.request_ids` says which.

Every row answered is logged into its model's own prediction log (the line's store, which that line's
reports and retraining trigger read) with `model_name` and `protocol: "v2"`, and counted in
`churn_v2_predictions_total{model, model_version, decision}`. Errors answer `{"error": "..."}`: a bad input
tensor (name, datatype, shape, missing) or malformed JSON 400, an unknown model or version 404, a model
not loaded yet 503, a body over MAX_BODY_BYTES 413.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import importlib.metadata
import logging
import time
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable

import numpy as np
from flask import Blueprint, Response, request
from prometheus_client import Counter, Histogram
from werkzeug.exceptions import RequestEntityTooLarge

from churnops.explain import DEFAULT_TOP_K, CannotExplain, explain_records
from churnops.redact import redact
from serving import guards
from serving.answers import answers_for
from serving.edge import read_capped
from serving.image import DecodedImage, log_entry, predict
from serving.inference import (
    REQUEST_ID_RULE,
    BadInput,
    Row,
    dumps,
    log_record,
    new_request_id,
    predict_rows,
    valid_request_id,
)
from serving.metrics import LATENCY_BUCKETS
from serving.model import LoadedModel, ModelSet
from serving.oip_models import ServedModel, ServedModels, build_served_models
from serving.oip_tensors import BYTES, InferRequest, OipError, Tensor, output_tensor, parse_request
from serving.shadow import Mirror

log = logging.getLogger(__name__)

SERVER_NAME = "churnops"
EXTENSIONS = ["binary_tensor_data"]
IMAGE_INPUT = "image"
INFER_RULE = "/v2/models/<name>/infer"  # Flask's rules: the http_requests counter's route labels
INFER_VERSION_RULE = "/v2/models/<name>/versions/<version>/infer"
MATRIX_INPUT = "features"  # a tabular model's one-tensor form: [n, k], columns in contract order
NUMERIC_TYPES = ("FP64", "FP32", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")
ON_REQUEST = ("explanations",)  # outputs computed only when `outputs` names them (they cost ms per row)
PIXEL_TYPE = "application/x-oip-uint8"  # the logged content type of an image sent as a UINT8 tensor


@dataclass
class Answer:
    """What one infer request computed: the served model, and per row its prediction.

    `inputs[i]`: a validated `serving.inference.Row` (tabular) or a `serving.image.DecodedImage`;
    `preds[i]`: (LoadedModel, value, decision) (tabular) or a `serving.image.ImagePrediction`."""

    served: ServedModel
    ids: list[str]
    inputs: list
    preds: list


@dataclass(frozen=True)
class Output:
    """One output a model can answer: datatype, shape per row (from the contract), its values per answer."""

    datatype: str
    dims: Callable[[Any], list[int]]  # contract -> the shape after the row dimension
    values: Callable[[Answer], list]  # flat, row-major


def _label(answer: Answer, d: int) -> str:
    t = answer.served.contract.target
    negative = next((x for x in t.labels if x != t.positive), "negative")
    return t.positive if d else negative


def _row(contract) -> list[int]:
    return []


def _explanations(a: Answer) -> list[str]:
    """Per row, its explanation (`churnops.explain`: exact tree SHAP per contract feature, log-odds) as
    JSON text; rows answered by one model are explained together. A 422 when the model cannot explain."""
    out: list[str | None] = [None] * len(a.preds)
    by_model: dict[int, list[int]] = {}
    for i, (m, _, _) in enumerate(a.preds):
        by_model.setdefault(id(m), []).append(i)
    for idx in by_model.values():
        m = a.preds[idx[0]][0]
        try:
            ex = explain_records(m.bundle, [a.inputs[i].values for i in idx], a.served.contract, DEFAULT_TOP_K)
        except CannotExplain as exc:
            raise OipError(
                422, f"output 'explanations': this model cannot explain: {exc.reason}", "cannot_explain"
            ) from exc
        for i, e in zip(idx, ex):
            out[i] = dumps(e).decode()
    return out


# output name -> how it is computed, per task
OUTPUTS: dict[str, dict[str, Output]] = {
    "binary_classification": {
        "probability": Output("FP64", _row, lambda a: [p for _, p, _ in a.preds]),
        "prediction": Output("BYTES", _row, lambda a: [_label(a, d) for _, _, d in a.preds]),
        "decision": Output("INT64", _row, lambda a: [int(d) for _, _, d in a.preds]),
        "explanations": Output("BYTES", _row, _explanations),
    },
    "regression": {
        "prediction": Output("FP64", _row, lambda a: [p for _, p, _ in a.preds]),
        "explanations": Output("BYTES", _row, _explanations),
    },
    "image_classification": {
        "class": Output("BYTES", _row, lambda a: [p.label for p in a.preds]),
        "class_index": Output("INT64", _row, lambda a: [p.index for p in a.preds]),
        "probabilities": Output(
            "FP32", lambda c: [len(c.classes)], lambda a: [float(v) for p in a.preds for v in p.proba.tolist()]
        ),
    },
}


def check_explained_rows(req: InferRequest, limit: int) -> None:
    """A 413 naming EXPLAIN_MAX_ROWS when a request asks to explain more rows than it allows."""
    n = max((t.shape[0] for t in req.inputs if t.shape), default=0)
    if n > limit:
        raise OipError(
            413,
            f"output 'explanations': {n} rows > EXPLAIN_MAX_ROWS {limit}: explain fewer rows per request",
            "batch_too_large",
        )


@cache
def v2_metrics() -> tuple[Counter, Histogram]:
    """(predictions counter, latency histogram) of the /v2 routes, labelled by model (created once)."""
    return (
        Counter(
            "churn_v2_predictions_total",
            "Predictions served by the Open Inference Protocol routes",
            ["model", "model_version", "decision"],
        ),
        Histogram(
            "churn_v2_latency_seconds",
            "Open Inference Protocol infer latency (parsing to response)",
            ["model"],
            buckets=LATENCY_BUCKETS,
        ),
    )


def server_version() -> str:
    try:
        return importlib.metadata.version("churnops")
    except importlib.metadata.PackageNotFoundError:
        return "0"


# ---- metadata ------------------------------------------------------------------------------------------


def input_specs(served: ServedModel) -> list[dict]:
    """The model's input tensors, from its contract."""
    c = served.contract
    if served.is_image:
        return [{"name": IMAGE_INPUT, "datatype": "UINT8", "shape": [-1, c.image.height, c.image.width, 3]}]
    return [
        {"name": n, "datatype": "FP64" if f.kind == "numeric" else BYTES, "shape": [-1]} for n, f in c.features.items()
    ]


def output_specs(served: ServedModel) -> list[dict]:
    return [
        {"name": n, "datatype": o.datatype, "shape": [-1, *o.dims(served.contract)]}
        for n, o in OUTPUTS[served.task].items()
    ]


def matrix_spec(served: ServedModel) -> dict:
    """The one-tensor alternative to the per-feature inputs of a tabular model."""
    c = served.contract
    return {
        "name": MATRIX_INPUT,
        "datatype": matrix_datatype(c),
        "shape": [-1, len(c.features)],
        "columns": list(c.features),
    }


def versions(served: ServedModel) -> list[str]:
    """The registered versions this server answers for the model (champion first, then a canary)."""
    ms = served.models.current
    return [str(m.version) for m in ms.models() if m.version is not None] if ms is not None else []


def model_metadata(served: ServedModel) -> dict:
    ms = served.models.current
    return {
        "name": served.name,
        "versions": versions(served),
        "platform": "onnxruntime_onnx"
        if served.is_image
        else f"xgboost_{ms.champion.bundle.runtime if ms else 'onnx'}",
        "inputs": input_specs(served),
        "outputs": output_specs(served),
        "parameters": {"dataset": served.settings.dataset, "task": served.task, "default": served.default}
        | ({} if served.is_image else {"matrix_input": matrix_spec(served)}),
    }


# ---- looking a model up ----------------------------------------------------------------------------------


def lookup(models: ServedModels, name: str) -> ServedModel:
    served = models.get(name)
    if served is None:
        raise OipError(404, f"model {name[:100]!r} is not served here; served: {models.names()}", "unknown_model")
    return served


def pinned(served: ServedModel, version: str | None) -> LoadedModel | None:
    """The loaded model of `version` (None: canary routing as /predict); 404 when no such version is served."""
    if version is None:
        return None
    ms = served.models.current
    for m in ms.models() if ms is not None else []:
        if m.version is not None and str(m.version) == version:
            return m
    raise OipError(
        404,
        f"model {served.name!r} version {version[:40]!r} is not served here; served versions: {versions(served)}",
        "unknown_version",
    )


def loaded(served: ServedModel) -> ModelSet:
    ms = served.models.current
    if ms is None:
        why = redact(served.models.last_error or "loading")
        raise OipError(503, f"model {served.name!r} is not ready: {why}"[:600], "not_ready")
    return ms


# ---- inputs ----------------------------------------------------------------------------------------------


def request_ids(req: InferRequest, n: int) -> list[str]:
    """`parameters.request_ids` (n valid ids), else a one-row request's valid `id`, else new ids."""
    given = req.parameters.get("request_ids")
    if given is not None:
        if not isinstance(given, list) or len(given) != n:
            raise OipError(
                400, f"parameters.request_ids: expected a list of {n} request ids (one per row)", "invalid_request_id"
            )
        out = []
        for i, r in enumerate(given):
            if isinstance(r, bool) or not isinstance(r, (str, int)) or not valid_request_id(str(r).strip()):
                raise OipError(400, f"parameters.request_ids[{i}]: {REQUEST_ID_RULE}", "invalid_request_id")
            out.append(str(r).strip())
        if len(set(out)) != n:
            raise OipError(400, "parameters.request_ids: each row needs a distinct request id", "duplicate_request_id")
        return out
    if n == 1 and req.id is not None and valid_request_id(req.id.strip()):
        return [req.id.strip()]
    return [new_request_id() for _ in range(n)]


def datatype_rule(kind: str) -> str:
    return "FP64 (or FP32/INT64)" if kind == "numeric" else BYTES


def matrix_datatype(contract) -> str:
    """The datatype of the one-tensor form: FP64 when every feature is numeric, else BYTES (numbers as text)."""
    return "FP64" if all(f.kind == "numeric" for f in contract.features.values()) else BYTES


def matrix_columns(served: ServedModel, t: Tensor) -> list[Tensor]:
    """The single `[n, k]` tensor `features` (columns in contract order) as one tensor per feature."""
    names = list(served.contract.features)
    k = len(names)
    if len(t.shape) != 2 or t.shape[1] != k:
        raise OipError(
            400, f"input {MATRIX_INPUT!r}: expected shape [n, {k}] (columns: {names}), got {t.shape}", "bad_shape"
        )
    want = matrix_datatype(served.contract)
    if t.datatype != BYTES and (want == BYTES or t.datatype not in NUMERIC_TYPES):
        raise OipError(
            400,
            f"input {MATRIX_INPUT!r}: expected datatype {want}"
            + (" (the contract has categorical features: send every value as text)" if want == BYTES else "")
            + f", got {t.datatype}",
            "wrong_datatype",
        )
    n = t.shape[0]
    values = column(Tensor(MATRIX_INPUT, t.datatype, t.shape, t.data))  # text decoded, NaN -> missing
    out = []
    for j, name in enumerate(names):
        col = values[j::k] if n else []
        kind = served.contract.features[name].kind
        # numbers sent as text are parsed by the contract's validator, as in /predict bodies
        out.append(Tensor(name, "FP64" if kind == "numeric" else BYTES, [n], col))
    return out


def tabular_rows(served: ServedModel, req: InferRequest, row_limit: int) -> list[Row]:
    """One validated `Row` per row of the per-feature tensors (or of the one `features` tensor);
    OipError names the first problems."""
    features = served.contract.features
    inputs = req.inputs
    if len(inputs) == 1 and inputs[0].name == MATRIX_INPUT and MATRIX_INPUT not in features:
        inputs = matrix_columns(served, inputs[0])
    by_name: dict[str, Tensor] = {}
    for t in inputs:
        if t.name not in features:
            raise OipError(
                400,
                f"input {t.name[:80]!r}: not an input of model {served.name!r}; inputs: {list(features)}",
                "unknown_input",
            )
        if t.name in by_name:
            raise OipError(400, f"input {t.name!r}: sent twice", "duplicate_input")
        kind = features[t.name].kind
        ok = t.datatype in NUMERIC_TYPES if kind == "numeric" else t.datatype == BYTES
        if not ok:
            raise OipError(
                400, f"input {t.name!r}: expected datatype {datatype_rule(kind)}, got {t.datatype}", "wrong_datatype"
            )
        if len(t.shape) not in (1, 2) or (len(t.shape) == 2 and t.shape[1] != 1):
            raise OipError(400, f"input {t.name!r}: expected shape [n] (or [n, 1]), got {t.shape}", "bad_shape")
        by_name[t.name] = t
    missing = [n for n in features if n not in by_name]
    if missing:
        shown = ", ".join(f"{n!r} ({datatype_rule(features[n].kind)}, shape [n])" for n in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise OipError(400, f"missing input {shown}{more}", "missing_input")
    counts = collections.Counter(t.rows for t in inputs)
    n = counts.most_common(1)[0][0]  # the rows most inputs have: the odd one out is named
    for t in inputs:
        if t.rows != n:
            raise OipError(
                400, f"input {t.name!r}: shape {t.shape} has {t.rows} rows, the other inputs have {n}", "shape_mismatch"
            )
    first = inputs[0]
    if n == 0:
        raise OipError(400, f"input {first.name!r}: no rows (shape {first.shape})", "empty_batch")
    if n > row_limit:
        raise OipError(413, f"{n} rows > limit {row_limit} (BATCH_ROW_LIMIT)", "batch_too_large")
    columns = {name: column(t) for name, t in by_name.items()}
    ids = request_ids(req, n)
    rows, problems = [], []
    for i in range(n):
        res = served.validate({name: col[i] for name, col in columns.items()})
        if res.errors:
            problems.extend(f"input {k!r} row {i}: {v}" for k, v in res.errors.items())
        else:
            rows.append(Row(ids[i], res.values))
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise OipError(400, "; ".join(problems[:5]) + more, "invalid_value")
    return rows


def column(t: Tensor) -> list:
    """A tensor's values as the JSON values /predict would get: numbers or strings (None: missing)."""
    data = t.data
    if isinstance(data, list):
        if bytes not in map(type, data):  # JSON data: as sent
            return data
        out = []
        for i, x in enumerate(data):  # binary BYTES elements: UTF-8 text
            try:
                out.append(x.decode("utf-8") if type(x) is bytes else x)
            except UnicodeDecodeError as exc:
                raise OipError(400, f"input {t.name!r}: element {i} is not UTF-8 text", "wrong_type") from exc
        return out
    return [None if isinstance(v, float) and v != v else v for v in np.asarray(data).tolist()]


def images(served: ServedModel, req: InferRequest, row_limit: int) -> tuple[list[str], list[DecodedImage]]:
    """(request ids, decoded images) of the `image` tensor, UINT8 [n, H, W, 3]."""
    c = served.contract
    h, w = c.image.height, c.image.width
    for t in req.inputs:
        if t.name != IMAGE_INPUT:
            raise OipError(
                400,
                f"input {t.name[:80]!r}: not an input of model {served.name!r}; inputs: ['{IMAGE_INPUT}']",
                "unknown_input",
            )
    if len(req.inputs) > 1:
        raise OipError(400, f"input {IMAGE_INPUT!r}: sent twice", "duplicate_input")
    t = req.inputs[0]
    if t.datatype != "UINT8":
        raise OipError(400, f"input {IMAGE_INPUT!r}: expected datatype UINT8, got {t.datatype}", "wrong_datatype")
    if len(t.shape) != 4 or t.shape[1:] != [h, w, 3]:
        raise OipError(400, f"input {IMAGE_INPUT!r}: expected shape [n, {h}, {w}, 3], got {t.shape}", "bad_shape")
    n = t.shape[0]
    if n == 0:
        raise OipError(400, f"input {IMAGE_INPUT!r}: no rows (shape {t.shape})", "empty_batch")
    if n > row_limit:
        raise OipError(413, f"{n} images > limit {row_limit} (BATCH_ROW_LIMIT)", "batch_too_large")
    pixels = np.asarray(t.data, dtype=np.uint8).reshape(n, h, w, 3)
    out = []
    for px in pixels:
        raw = np.ascontiguousarray(px).tobytes()
        x = np.ascontiguousarray(px.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
        out.append(DecodedImage(x, PIXEL_TYPE, hashlib.sha256(raw).hexdigest(), len(raw), w, h))
    return request_ids(req, n), out


def feedback_target(models: ServedModels, data: dict, state) -> tuple[Any, Any, Any]:
    """(task, contract, prediction log) a /feedback body goes to: its `model` (a model served under /v2)
    when named, so the label lands in that model's own line beside its predictions; else the default's."""
    name = data.get("model")
    if name is None:
        return state.task, state.contract or state.image_contract, state.plog
    served = models.get(name) if isinstance(name, str) else None
    if served is None:
        raise BadInput(
            "invalid feedback",
            {"model": f"expected one of the served models {models.names()}"},
            "invalid_feedback",
            422,
        )
    if served.default:
        return state.task, state.contract or state.image_contract, state.plog
    return served.feedback_task, served.contract, served.plog


# ---- the blueprint ---------------------------------------------------------------------------------------


class V2Infer:
    """`POST /v2/models/{name}[/versions/{v}]/infer`: the request body in, the JSON answer out, every row logged
    (and mirrored to the shadow). The Flask view and the fast WSGI path in front of Flask
    (churnops/speed/wsgi.py) both call it; it raises before anything is logged."""

    def __init__(self, models: ServedModels, state):
        self.models = models
        self.state = state  # serving.routes.state.ServingState: settings, metrics
        self.settings = state.settings
        self.counter, self.latency = v2_metrics()

    def __call__(self, name: str, version: str | None, raw: bytes, binary_header: str | None = None) -> bytes:
        t0 = time.perf_counter()
        served = lookup(self.models, name)
        ms = loaded(served)
        m = pinned(served, version)
        req = parse_request(raw, binary_header)
        outputs = OUTPUTS[served.task]
        wanted = req.outputs if req.outputs is not None else [o for o in outputs if o not in ON_REQUEST]
        if served.is_image and "explanations" in wanted:
            raise OipError(
                422, "output 'explanations': this model cannot explain: the image CNN has no trees", "cannot_explain"
            )
        unknown = [o for o in wanted if o not in outputs]
        if unknown:
            raise OipError(
                400,
                f"output {unknown[0][:80]!r}: not an output of model {served.name!r}; outputs: {list(outputs)}",
                "unknown_output",
            )
        target = ModelSet(m) if m is not None else ms
        if "explanations" in wanted and not served.is_image:
            check_explained_rows(req, self.settings.explain_max_rows)
        if served.is_image:
            ids, imgs = images(served, req, self.settings.batch_row_limit)
            answer = Answer(served, ids, imgs, [predict(target, rid, img) for rid, img in zip(ids, imgs)])
            routes = [p.model.route for p in answer.preds]
            answered_by = [p.model for p in answer.preds]
        else:
            rows = tabular_rows(served, req, self.settings.batch_row_limit)
            ids = [r.request_id for r in rows]
            answer = Answer(served, ids, rows, predict_rows(target, rows))
            routes = [mm.route for mm, _, _ in answer.preds]
            answered_by = [mm for mm, _, _ in answer.preds]
        body = {
            "model_name": served.name,
            "model_version": str(answered_by[0].version) if answered_by[0].version is not None else None,
            "outputs": [
                output_tensor(
                    o, outputs[o].datatype, [len(ids), *outputs[o].dims(served.contract)], outputs[o].values(answer)
                )
                for o in wanted
            ],
            "parameters": {"request_ids": ids, "routes": routes},
        }
        if req.id is not None:
            body["id"] = req.id
        out = dumps(body)
        took = time.perf_counter() - t0
        log_answer(served, answer, took * 1000 / len(ids))
        mirror_answer(served, answer)
        try:
            self.latency.labels(served.name).observe(took)
            for mm, d in zip(answered_by, decisions(answer)):
                self.counter.labels(served.name, str(mm.version), d).inc()
        except Exception:  # metrics never fail a prediction that is already logged
            pass
        return out

    def route(self, path: str) -> Callable[[bytes], bytes] | None:
        """The fast path's handler of `path` when it is an infer route (`/v2/models/{name}/infer`,
        `/v2/models/{name}/versions/{v}/infer`), else None (Flask answers)."""
        if not path.startswith("/v2/models/"):  # every other POST (/predict/batch, /feedback): one check
            return None
        parts = path.split("/")
        if len(parts) == 5 and parts[1:3] == ["v2", "models"] and parts[0] == "" and parts[4] == "infer" and parts[3]:
            return functools.partial(self.answer_fast, parts[3], None, INFER_RULE)
        if (
            len(parts) == 7
            and parts[0] == ""
            and parts[1:3] == ["v2", "models"]
            and parts[4] == "versions"
            and parts[6] == "infer"
            and parts[3]
            and parts[5]
        ):
            return functools.partial(self.answer_fast, parts[3], parts[5], INFER_VERSION_RULE)
        return None

    def answer_fast(self, name: str, version: str | None, rule: str, raw: bytes) -> bytes:
        """The answer, counted as Flask's after_request counts it (it does not see the fast path)."""
        out = self(name, version, raw)
        try:
            self.state.child(self.state.metrics.http_requests, rule, "POST", "200").inc()
        except Exception:  # metrics never fail a prediction that is already logged
            pass
        return out


def fast_accepts(state, environ: dict) -> bool:
    """Whether the fast path may answer a /v2 infer: the Host is allowed and the body is JSON (the binary
    tensor extension, `Inference-Header-Content-Length`, goes to the Flask view)."""
    return (
        guards.check_host(environ.get("HTTP_HOST", ""), state.hosts) is None
        and "HTTP_INFERENCE_HEADER_CONTENT_LENGTH" not in environ
    )


def wrap_infer_fast_path(app, state) -> None:
    """Put `V2Infer` in front of Flask for the /v2 infer routes (churnops/speed/wsgi.py), as /predict's;
    FAST_PATHS=off, or an image server (no tabular fast paths), leaves Flask answering them."""
    if state.fast is None:
        return
    app.wsgi_app = state.fast.wrap_wsgi_routes(
        app.wsgi_app,
        app.extensions["oip_infer"].route,
        state.settings.max_body_bytes,
        accept=functools.partial(fast_accepts, state),
    )


def oip_blueprint(state, start: bool = True) -> Blueprint:
    """The /v2 routes over the default model of `state` (serving.app.ServingState) and OIP_MODELS.

    `start`: start the extra models' loaders and logs (create_app's `start_background`); the served
    models are in `app.extensions["oip"]` (a `serving.oip_models.ServedModels`)."""
    s = state.settings
    models = build_served_models(state, state.metrics)
    if start:
        models.start()
    bp = Blueprint("oip", __name__)
    infer_answer = V2Infer(models, state)
    bp.record_once(lambda setup: setup.app.extensions.update({"oip": models, "oip_infer": infer_answer}))

    @bp.errorhandler(OipError)
    def oip_error(e: OipError):
        state.metrics.rejections.labels("v2", e.reason).inc()
        return Response(dumps({"error": e.message}), status=e.status, mimetype="application/json")

    @bp.errorhandler(BadInput)
    def bad_input(e: BadInput):
        detail = "; ".join(f"{k}: {v}" for k, v in e.details.items())
        return oip_error(OipError(e.status, f"{e.error}: {detail}" if detail else e.error, e.reason))

    def json_answer(obj: dict, status: int = 200) -> Response:
        return Response(dumps(obj), status=status, mimetype="application/json")

    def read_body() -> bytes:
        n = request.content_length
        try:
            if n is None:  # chunked: all of it, or 413 past MAX_BODY_BYTES
                return read_capped(request.environ["wsgi.input"], s.max_body_bytes)
        except RequestEntityTooLarge as exc:
            raise OipError(
                413, f"body: larger than the {s.max_body_bytes} byte limit (MAX_BODY_BYTES)", "body_too_large"
            ) from exc
        if n > s.max_body_bytes:
            raise OipError(
                413, f"body: {n} bytes > the {s.max_body_bytes} byte limit (MAX_BODY_BYTES)", "body_too_large"
            )
        return request.environ["wsgi.input"].read(n)

    @bp.get("/v2/health/live")
    def live():
        return json_answer({"live": True})

    @bp.get("/v2/health/ready")
    def ready():
        ok = models.ready
        return json_answer(
            {"ready": ok, "models": {n: models.get(n).ready for n in models.names()}}, 200 if ok else 503
        )

    @bp.get("/v2")
    def server_metadata():
        return json_answer({"name": SERVER_NAME, "version": server_version(), "extensions": EXTENSIONS})

    @bp.get("/v2/models/<name>")
    @bp.get("/v2/models/<name>/versions/<version>")
    def metadata(name: str, version: str | None = None):
        served = lookup(models, name)
        if version is not None:
            loaded(served)
            pinned(served, version)
        return json_answer(model_metadata(served))

    @bp.get("/v2/models/<name>/ready")
    @bp.get("/v2/models/<name>/versions/<version>/ready")
    def model_ready(name: str, version: str | None = None):
        served = lookup(models, name)
        if served.models.current is not None:
            pinned(served, version)
        ok = served.ready
        return json_answer({"name": served.name, "ready": ok}, 200 if ok else 503)

    @bp.post("/v2/models/<name>/infer")
    @bp.post("/v2/models/<name>/versions/<version>/infer")
    def infer(name: str, version: str | None = None):
        binary = request.headers.get("Inference-Header-Content-Length")
        return Response(infer_answer(name, version, read_body(), binary), mimetype="application/json")

    return bp


def decisions(answer: Answer) -> list[str]:
    """The counter's `decision` label per row: 0/1, `none` (regression) or the class."""
    if answer.served.is_image:
        return [p.label for p in answer.preds]
    return [answers_for(m.bundle.task).decision_label(d) for m, _, d in answer.preds]


def mirror_answer(served: ServedModel, answer: Answer) -> None:
    """The rows the line's champion answered, offered to its shadow (SHADOW_FRACTION; sampled by request id,
    a non-blocking put after the answer is built: serving/shadow.py)."""
    if served.shadow is None or not served.shadow.enabled or served.is_image:
        return
    champ = [i for i, (m, _, _) in enumerate(answer.preds) if m.route == "champion"]
    if not champ:
        return
    rows = answer.inputs
    try:
        served.shadow.offer_sampled(
            Mirror(
                [rows[i].request_id for i in champ],
                records=[rows[i].values for i in champ],
                champion_version=answer.preds[champ[0]][0].version,
            )
        )
    except Exception:  # the answer is logged already: a mirror never fails it
        log.exception("offering /v2 rows to the shadow failed")


def log_answer(served: ServedModel, answer: Answer, latency_ms: float) -> None:
    """Each row into the model's own prediction log (its line's store), like /predict's records."""
    extra = {"model_name": served.name, "protocol": "v2"}
    ts = time.time()
    if served.is_image:
        for rid, pred, img in zip(answer.ids, answer.preds, answer.inputs):
            served.plog.submit(log_entry(new_request_id(), rid, pred, img, "http", latency_ms, ts=ts, **extra))
        return
    for row, (m, p, d) in zip(answer.inputs, answer.preds):
        served.plog.submit(log_record(new_request_id(), row, m, p, d, "http", latency_ms, ts=ts, **extra))
