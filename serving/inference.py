"""Request parsing, contract validation and prediction shared by the HTTP API and the consumer.

No pandas here: records are validated with the contract's compiled validator (`churnops.validator`,
or its fast twin `churnops.speed.records.FastValidator`) and encoded with
the encoder's pure-Python `transform_records` into one float32 matrix per model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson as _orjson  # fast JSON; the stdlib parser gives the error messages

from churnops.contract import DatasetContract, RecordResult
from churnops.request_ids import (  # noqa: F401  (re-exported: the request id rules of every server path)
    MAX_REQUEST_ID,
    REQUEST_ID_RULE,
    RESERVED_ID_PREFIXES,
    new_request_id,
    new_request_ids,
    valid_request_id,
)
from serving.answers import answers_for
from serving.encoding import dumps, finite, json_text  # noqa: F401  (finite, json_text: the servers' JSON helpers)
from serving.loading import LoadedModel, ModelSet


class BadInput(ValueError):
    """An input the contract (or JSON) rejects; carries a reason label and per-field details."""

    def __init__(self, error: str, details: dict[str, str], reason: str, status: int = 422):
        super().__init__(error)
        self.error, self.details, self.reason, self.status = error, details, reason, status


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON (non-finite numbers are rejected)")


MAX_JSON_DEPTH = 1024  # orjson's nesting limit; the stdlib fallback stops at the interpreter's stack


def _too_deep() -> BadInput:
    return BadInput(
        "body is not acceptable JSON", {"body": f"nested deeper than {MAX_JSON_DEPTH} levels"}, "too_deep", 400
    )


def parse_json(raw: bytes | str) -> Any:
    """Strict JSON: empty body, invalid JSON, NaN/Infinity and nesting deeper than `MAX_JSON_DEPTH`
    raise `BadInput` (400)."""
    if raw is None or (isinstance(raw, (bytes, str)) and not raw.strip()):
        raise BadInput("empty body", {"body": "expected a JSON document, got an empty body"}, "empty_body", 400)
    try:
        return _orjson.loads(raw)  # strict: rejects NaN/Infinity; fast path only
    except Exception as exc:
        if "depth limit" in str(exc):  # orjson's nesting limit: the stdlib would recurse
            raise _too_deep() from exc
        # otherwise re-parse below for a descriptive message (or a value orjson cannot hold)
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except RecursionError as exc:  # nesting deeper than the interpreter's stack
        raise _too_deep() from exc
    except UnicodeDecodeError as exc:
        raise BadInput("body is not UTF-8 JSON", {"body": str(exc)[:200]}, "invalid_json", 400) from exc
    except ValueError as exc:
        reason = "non_finite_number" if "non-finite" in str(exc) else "invalid_json"
        raise BadInput("body is not valid JSON", {"body": str(exc)[:200]}, reason, 400) from exc


def split_envelope(obj: Any, prefix: str = "") -> tuple[str | None, Any]:
    """`{"request_id", "features": {...}}` or a bare feature object -> (request_id, features)."""
    if not isinstance(obj, dict):
        raise BadInput(
            "expected a JSON object",
            {prefix + "body" if not prefix else prefix.rstrip("."): f"expected an object, got {type(obj).__name__}"},
            "not_object",
            422,
        )
    rid = obj.get("request_id")
    if rid is not None:
        if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not valid_request_id(str(rid)):
            raise BadInput("invalid request_id", {prefix + "request_id": REQUEST_ID_RULE}, "invalid_request_id", 422)
        rid = str(rid).strip()
    if "features" in obj and isinstance(obj["features"], dict):
        return rid, obj["features"]
    if "features" in obj:
        raise BadInput(
            "invalid features",
            {prefix + "features": f"expected an object, got {type(obj['features']).__name__}"},
            "not_object",
            422,
        )
    if "request_id" not in obj:
        return rid, obj
    return rid, {k: v for k, v in obj.items() if k != "request_id"}


@dataclass
class Row:
    request_id: str
    values: dict
    ignored: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)  # raw field name -> feature name


def check_row(
    obj: Any,
    contract: DatasetContract,
    unknown_category: str,
    prefix: str | int = "",
    validator: Callable[[Any], RecordResult] | None = None,
) -> Row:
    """Validate one input with `validator` (default: the contract's compiled validator, the
    reference); `prefix` (a row index in a batch) prefixes the field names of errors."""
    if type(obj) is dict and "features" not in obj and "request_id" not in obj:
        feats, rid = obj, None  # the common bare object
    else:
        rid, feats = split_envelope(obj, f"{prefix}." if type(prefix) is int else prefix)
    res = validator(feats) if validator is not None else contract.validator().validate(feats, unknown_category)
    if res.errors:
        p = f"{prefix}." if type(prefix) is int else prefix
        raise BadInput("invalid features", {p + k: v for k, v in res.errors.items()}, _reason(res.errors), 422)
    return Row(rid or new_request_id(), res.values, res.ignored, res.renamed)


def _reason(errors: dict[str, str]) -> str:
    """One label for the rejection counter (the first problem's class)."""
    msg = next(iter(errors.values()), "")
    if msg.startswith("missing"):
        return "missing_field"
    if "category" in msg:
        return "unknown_category"
    if "finite" in msg:
        return "non_finite_number"
    if "below" in msg or "above" in msg:
        return "out_of_range"
    if msg.startswith("expected"):
        return "wrong_type"
    return "invalid"


def route_groups(models: ModelSet, request_ids: list[str]) -> list[tuple[LoadedModel, list[int] | None]]:
    """Which rows each model answers: (model, row indices), or (model, None) when it answers them all."""
    ms = models.models()
    if len(ms) == 1:
        return [(ms[0], None)]
    picks = [models.pick(r) for r in request_ids]
    out = []
    for m in ms:
        idx = [i for i, p in enumerate(picks) if p is m]
        if len(idx) == len(picks):
            out.append((m, None))
        elif idx:
            out.append((m, idx))
    return out


def predict_rows(models: ModelSet, rows: list[Row]) -> list[tuple[LoadedModel, float, int]]:
    """Route each row, one matrix call per model; returns (model, probability, decision) per row
    (a regression model: (model, predicted value, None))."""
    out: list = [None] * len(rows)
    for m, idx in route_groups(models, [r.request_id for r in rows]):
        idx = range(len(rows)) if idx is None else idx
        proba = m.bundle.predict_records([rows[i].values for i in idx])
        thr, decide = m.threshold, answers_for(m.bundle.task).decide
        for i, p in zip(idx, proba.tolist()):
            out[i] = (m, float(p), decide(p, thr))
    return out


def log_record(
    _id: str,
    row: Row,
    m: LoadedModel,
    p: float,
    d: int,
    source: str,
    latency_ms: float,
    ts: float | None = None,
    **extra,
) -> dict:
    return {
        "_id": _id,
        "ts": ts if ts is not None else time.time(),
        "request_id": row.request_id,
        "source": source,
        "model_run_id": m.run_id,
        "model_version": m.version,
        "route": m.route,
        "features": row.values,
        **answers_for(m.bundle.task).log_fields(p, d),
        "latency_ms": round(latency_ms, 3),
        **extra,
    }


def response_body(row: Row, m: LoadedModel, p: float, d: int) -> dict:
    """THE answer to one record, for `POST /predict` (+ `latency_ms`) and a stream result (+ shard_id,
    sequence_number, ts: serving/stream_tabular.py): one function, both callers."""
    body = {
        "request_id": row.request_id,
        **answers_for(m.bundle.task).answer(p, d, m.threshold),
        "model_run_id": m.run_id,
        "model_version": m.version,
        "route": m.route,
    }
    if row.ignored:
        body["ignored_fields"] = row.ignored
    if row.renamed:
        body["renamed"] = row.renamed
    return body


def with_ignored(item: bytes, ignored: list[str]) -> bytes:
    """A row's JSON object from `serving.answers` (`batch_items`) with its `ignored_fields` added."""
    return item[:-1] + b',"ignored_fields":' + dumps(ignored) + b"}"
