"""Open Inference Protocol (KServe v2) request bodies: tensors in, checked, as numpy arrays.

An inference request is a JSON object `{"id"?, "parameters"?, "inputs": [tensor...], "outputs"?: [{"name"}]}`,
a tensor `{"name", "datatype", "shape", "data", "parameters"?}` with `data` in row-major order (flat or
nested). The binary tensor data extension is read too: with the `Inference-Header-Content-Length`
header the body is that many bytes of JSON followed by the raw bytes of the inputs whose parameters
carry `binary_data_size` (in input order; BYTES elements as 4-byte little-endian length + bytes), as
`tritonclient` sends by default.

Every problem raises `OipError` with the status and one message naming the input and what was
expected (serving/oip.py answers `{"error": message}`).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.inference import BadInput, parse_json

NUMERIC = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
BYTES = "BYTES"
STR, NUMBER, INT = frozenset({str}), frozenset({float, int}), frozenset({int})  # exact types (no bool)
DATATYPES = frozenset((*NUMERIC, BYTES))
MAX_SHOWN = 5  # problems named in one error message


class OipError(Exception):
    """A request the protocol refuses: `status` and the one-line `message` of its `{"error": ...}` answer."""

    def __init__(self, status: int, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


@dataclass
class Tensor:
    """One input tensor: its name, datatype, shape and elements (flat, row-major)."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray | list  # flat: a list (JSON FP and BYTES; None: missing; binary BYTES: bytes) or an ndarray
    parameters: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[str] | None  # None: every output
    parameters: dict


def _flat(data: list) -> list:
    """Nested lists in row-major order -> one flat list."""
    if list not in map(type, data):  # flat already (map/in run in C)
        return data
    out: list = []
    for x in data:
        out.extend(_flat(x) if type(x) is list else [x])
    return out


def _json_elements(name: str, datatype: str, data: Any) -> np.ndarray | list:
    """The JSON `data` of a tensor, element types checked: a list for BYTES (str, None: missing) and FP
    (numbers, None: missing), a numpy array for the integer and BOOL types."""
    flat = _flat(data) if type(data) is list else [data]
    if datatype == BYTES:
        if STR >= set(map(type, flat)):  # the common case, one pass in C
            return flat
        for i, x in enumerate(flat):
            if x is not None and not isinstance(x, str):
                raise OipError(
                    400, f"input {name!r}: element {i} is {_kind(x)}; datatype BYTES takes strings", "wrong_type"
                )
        return flat
    fp = datatype.startswith("FP")
    if fp and NUMBER >= set(map(type, flat)):  # the common case, one pass in C
        return flat
    for i, x in enumerate(flat):
        if x is None:
            if fp:
                continue  # a missing value (the contract decides whether the feature may be missing)
            raise OipError(400, f"input {name!r}: element {i} is null; datatype {datatype} takes numbers", "wrong_type")
        ok = isinstance(x, bool) if datatype == "BOOL" else isinstance(x, (int, float)) and not isinstance(x, bool)
        if not ok:
            want = "true/false" if datatype == "BOOL" else "numbers"
            raise OipError(
                400, f"input {name!r}: element {i} is {_kind(x)}; datatype {datatype} takes {want}", "wrong_type"
            )
        if isinstance(x, float) and not fp and not x.is_integer():
            raise OipError(
                400, f"input {name!r}: element {i} is {x!r}; datatype {datatype} takes integers", "wrong_type"
            )
    if fp:
        return flat
    try:
        return np.array(flat, dtype=NUMERIC[datatype])
    except (OverflowError, ValueError) as exc:
        raise OipError(400, f"input {name!r}: a value does not fit datatype {datatype} ({exc})", "wrong_type") from exc


def _kind(x: Any) -> str:
    return "null" if x is None else f"a {type(x).__name__} ({str(x)[:20]!r})"


def _bytes_elements(name: str, raw: bytes) -> list[bytes]:
    """BYTES elements of the binary extension: 4-byte little-endian length, then the bytes, repeated."""
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise OipError(400, f"input {name!r}: binary BYTES data ends inside an element's length", "invalid_binary")
        (n,) = struct.unpack_from("<I", raw, i)
        if i + 4 + n > len(raw):
            raise OipError(400, f"input {name!r}: binary BYTES element longer than the data sent", "invalid_binary")
        out.append(raw[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def _shape(name: str, shape: Any) -> list[int]:
    if type(shape) is not list or not INT >= set(map(type, shape)) or (shape and min(shape) < 0):
        raise OipError(
            400, f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}"[:200], "bad_shape"
        )
    return shape


def _tensor(obj: Any, i: int, binary: memoryview | None, offset: int) -> tuple[Tensor, int]:
    """Input `i` of the request; `offset`: where its binary data starts (the next offset returned)."""
    if not isinstance(obj, dict):
        raise OipError(400, f"inputs[{i}]: expected a tensor object, got {type(obj).__name__}", "not_object")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise OipError(400, f"inputs[{i}]: a tensor needs a `name` (a string)", "missing_name")
    datatype = obj.get("datatype")
    if datatype not in DATATYPES:
        raise OipError(
            400,
            f"input {name!r}: datatype {str(datatype)[:20]!r} is not one of {', '.join((*NUMERIC, BYTES))}",
            "wrong_datatype",
        )
    shape = _shape(name, obj.get("shape"))
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise OipError(400, f"input {name!r}: parameters must be an object", "not_object")
    size = params.get("binary_data_size")
    if size is not None:
        if binary is None:
            raise OipError(
                400,
                f"input {name!r}: binary_data_size given but the request has no Inference-Header-Content-Length",
                "invalid_binary",
            )
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise OipError(
                400, f"input {name!r}: binary_data_size {size!r} exceeds the binary data sent", "invalid_binary"
            )
        raw = bytes(binary[offset : offset + size])
        offset += size
        if datatype == BYTES:
            data: np.ndarray | list = _bytes_elements(name, raw)
        else:
            dt = np.dtype(NUMERIC[datatype]).newbyteorder("<")
            if len(raw) % dt.itemsize:
                raise OipError(
                    400, f"input {name!r}: {len(raw)} bytes are no whole number of {datatype}", "invalid_binary"
                )
            data = np.frombuffer(raw, dtype=dt).astype(NUMERIC[datatype])
    elif "data" not in obj:
        raise OipError(400, f"input {name!r}: no `data` (and no binary_data_size)", "missing_data")
    else:
        data = _json_elements(name, datatype, obj["data"])
    want = math.prod(shape)
    if len(data) != want:
        raise OipError(
            400, f"input {name!r}: shape {shape} holds {want} elements, data has {len(data)}", "shape_mismatch"
        )
    return Tensor(name, datatype, shape, data, params), offset


def parse_request(raw: bytes, header_length: str | None = None) -> InferRequest:
    """An inference request body (JSON, or JSON + binary tensors with `Inference-Header-Content-Length`)."""
    binary = None
    if header_length is not None:
        try:
            n = int(header_length)
            if not 0 <= n <= len(raw):
                raise ValueError
        except ValueError as exc:
            raise OipError(
                400,
                f"Inference-Header-Content-Length {header_length[:20]!r} is not a length within the body",
                "invalid_binary",
            ) from exc
        raw, binary = raw[:n], memoryview(raw)[n:]
    try:
        body = parse_json(raw)
    except BadInput as e:
        detail = next(iter(e.details.values()), "")
        raise OipError(400, f"{e.error}: {detail}" if detail else e.error, e.reason) from e
    if not isinstance(body, dict):
        raise OipError(400, f"expected a JSON object, got {type(body).__name__}", "not_object")
    rid = body.get("id")
    if rid is not None and not isinstance(rid, str):
        raise OipError(400, f"id: expected a string, got {type(rid).__name__}", "invalid_id")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise OipError(400, "parameters: expected an object", "not_object")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise OipError(400, "inputs: expected a non-empty list of tensors", "missing_inputs")
    tensors, offset = [], 0
    for i, obj in enumerate(inputs):
        t, offset = _tensor(obj, i, binary, offset)
        tensors.append(t)
    outputs = body.get("outputs")
    names = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise OipError(400, 'outputs: expected a list of {"name": ...} objects', "invalid_outputs")
        names = [o["name"] for o in outputs]
    return InferRequest(rid, tensors, names, params)


def output_tensor(name: str, datatype: str, shape: list[int], data: list) -> dict:
    """One output tensor of an inference response."""
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}
