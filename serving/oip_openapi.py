"""OpenAPI path items of the Open Inference Protocol routes (serving/oip.py), for /openapi.json."""

from __future__ import annotations

TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string", "description": "a contract feature (tabular) or `image`"},
        "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "INT32", "INT64", "FP32", "FP64", "BYTES"]},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "data": {"type": "array", "items": {}, "description": "row-major (flat or nested)"},
        "parameters": {"type": "object", "description": "`binary_data_size` with the binary tensor data extension"},
    },
}
ERROR = {
    "description": "error",
    "content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}},
}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "registered model name: the default model or one of OIP_MODELS",
}


def ok(desc: str, schema: dict | None = None) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def model_paths(suffix: str, with_version: bool) -> dict:
    params = [NAME, VERSION] if with_version else [NAME]
    base = "/v2/models/{name}" + ("/versions/{version}" if with_version else "")
    if suffix == "":
        op = {
            "get": {
                "summary": "Model metadata: versions, platform, inputs and outputs (names, datatypes, shapes)",
                "parameters": params,
                "responses": {"200": ok("model metadata"), "404": ERROR},
            }
        }
    elif suffix == "/ready":
        op = {
            "get": {
                "summary": "Model readiness: 200 ready, 503 while loading",
                "parameters": params,
                "responses": {"200": ok("ready"), "404": ERROR, "503": ok("not ready")},
            }
        }
    else:
        op = {
            "post": {
                "summary": "Inference: named input tensors in, the selected outputs out",
                "parameters": params,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["inputs"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "parameters": {
                                        "type": "object",
                                        "properties": {"request_ids": {"type": "array", "items": {"type": "string"}}},
                                    },
                                    "inputs": {"type": "array", "items": TENSOR},
                                    "outputs": {
                                        "type": "array",
                                        "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": ok(
                        "outputs",
                        {
                            "type": "object",
                            "properties": {
                                "model_name": {"type": "string"},
                                "model_version": {"type": "string", "nullable": True},
                                "id": {"type": "string"},
                                "parameters": {"type": "object"},
                                "outputs": {"type": "array", "items": TENSOR},
                            },
                        },
                    ),
                    "400": ERROR,
                    "404": ERROR,
                    "413": ERROR,
                    "503": ERROR,
                },
            }
        }
    return {base + suffix: op}


def oip_paths() -> dict[str, dict]:
    """{path: operations} of every /v2 route."""
    paths = {
        "/v2/health/live": {"get": {"summary": "Server liveness", "responses": {"200": ok("live")}}},
        "/v2/health/ready": {
            "get": {
                "summary": "Server readiness: every served model loaded",
                "responses": {"200": ok("ready"), "503": ok("a model is not loaded yet")},
            }
        },
        "/v2": {"get": {"summary": "Server metadata: name, version, extensions", "responses": {"200": ok("metadata")}}},
    }
    for suffix in ("", "/ready", "/infer"):
        for with_version in (False, True):
            paths |= model_paths(suffix, with_version)
    return paths
