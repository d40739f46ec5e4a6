"""OpenAPI 3 description of the HTTP API, built with apispec (served at /openapi.json).

The prediction's own fields and the /feedback body are the contract's task's (`churnops.tasks`):
a classifier answers probability/churn/decision/threshold and takes an `outcome` 0/1 or a `label`;
a regression answers `prediction` and takes the observed `value` in the target's range."""

from __future__ import annotations

from functools import lru_cache

from apispec import APISpec

from churnops.contract import DatasetContract, load_contract
from churnops.tasks import task_for
from serving.answers import answers_for
from serving.oip_openapi import oip_paths

# ?explain=true&top_k=3 on /predict and /predict/batch (serving/explain_http.py, docs/explanations.md)
EXPLAIN_PARAMETERS = [
    {
        "name": "explain",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean", "default": False},
        "description": "add `explanation`: exact tree SHAP per contract feature, in log-odds (422: the model cannot explain)",
    },
    {
        "name": "top_k",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 50, "default": 3},
        "description": "how many features `explanation.top` names",
    },
]


def _feature_schema(contract: DatasetContract) -> dict:
    props = {}
    for name, f in contract.features.items():
        if f.kind == "numeric":
            p = {"type": "integer" if f.dtype == "int" else "number"}
            if f.min is not None:
                p["minimum"] = f.min
            if f.max is not None:
                p["maximum"] = f.max
        else:
            p = {"type": "string", "enum": list(f.categories)}
        props[name] = p
    schema = {
        "type": "object",
        "properties": props,
        "required": list(contract.features),
        "additionalProperties": True,
        "description": (
            "Clean feature names of the data contract (the raw data file's column names, e.g. "
            "`Customer_Age`, are accepted too, renamed and reported); extra fields are ignored and reported."
        ),
    }
    if contract.example:
        schema["example"] = dict(contract.example)
    return schema


def build_spec(contract: DatasetContract, version: str = "1.0.0") -> dict:
    task = answers_for(task_for(contract))
    what = task.describe(contract)
    spec = APISpec(
        title="Churn prediction API",
        version=version,
        openapi_version="3.0.3",
        info={"description": f"{what} from the pinned model; canary routing; prediction log."},
    )
    spec.components.schema("Features", _feature_schema(contract))
    spec.components.schema(
        "Envelope",
        {
            "type": "object",
            "required": ["features"],
            "properties": {
                "request_id": {"type": "string", "maxLength": 128},
                "features": {"$ref": "#/components/schemas/Features"},
            },
        },
    )
    spec.components.schema(
        "Prediction",
        {
            "type": "object",
            "properties": {
                "request_id": {"type": "string"},
                **task.answer_schema(),
                "model_run_id": {"type": "string"},
                "model_version": {"type": "string", "nullable": True},
                "route": {"type": "string", "enum": ["champion", "challenger"]},
                "ignored_fields": {"type": "array", "items": {"type": "string"}},
                "renamed": {"$ref": "#/components/schemas/Renamed"},
            },
        },
    )
    spec.components.schema(
        "Renamed",
        {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "raw field name -> contract feature name, for fields sent under the raw file's names",
        },
    )
    spec.components.schema(
        "Error",
        {
            "type": "object",
            "required": ["error", "details"],
            "properties": {
                "error": {"type": "string"},
                "details": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    )
    err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    one = {"oneOf": [{"$ref": "#/components/schemas/Features"}, {"$ref": "#/components/schemas/Envelope"}]}

    def ok_json(desc: str, schema: dict | None = None) -> dict:
        return {"description": desc, "content": {"application/json": {"schema": schema or {"type": "object"}}}}

    spec.path(
        "/predict",
        operations={
            "post": {
                "summary": "Predict one customer",
                "parameters": EXPLAIN_PARAMETERS,
                "requestBody": {"required": True, "content": {"application/json": {"schema": one}}},
                "responses": {
                    "200": ok_json("prediction", {"$ref": "#/components/schemas/Prediction"}),
                    "400": {"description": "not JSON / empty / NaN", **err},
                    "413": {"description": "body too large", **err},
                    "422": {"description": "contract violation, per field", **err},
                    "503": {"description": "model not loaded", **err},
                },
            }
        },
    )
    spec.path(
        "/predict/batch",
        operations={
            "post": {
                "summary": "Predict a list of customers (up to the batch row limit)",
                "parameters": EXPLAIN_PARAMETERS,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "array", "items": one}}},
                },
                "responses": {
                    "200": ok_json(
                        "predictions",
                        {
                            "type": "object",
                            "properties": {
                                "count": {"type": "integer"},
                                "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}},
                                "renamed": {"$ref": "#/components/schemas/Renamed"},
                            },
                        },
                    ),
                    "400": {"description": "bad JSON", **err},
                    "413": {"description": "too large / too many rows", **err},
                    "422": {"description": "contract violation; details keyed `<index>.<field>`", **err},
                },
            }
        },
    )
    spec.path(
        "/feedback",
        operations={
            "post": {
                "summary": f"Realized outcome for a request: {task.feedback_summary}",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["request_id"],
                                "properties": {
                                    "request_id": {"type": "string"},
                                    **task.feedback_schema(contract),
                                    "model": {
                                        "type": "string",
                                        "description": "a model served under /v2 (OIP_MODELS): the label goes to "
                                        "its line and is parsed by its task; default: this server's model",
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {"202": ok_json("accepted"), "422": {"description": "invalid", **err}},
            }
        },
    )
    for path, summary in (
        ("/health", "Liveness"),
        ("/ready", "Readiness: 503 until a model is loaded"),
        ("/model", "Loaded model(s): run id, version, aliases, threshold, test metrics, runtime"),
    ):
        spec.path(
            path,
            operations={
                "get": {
                    "summary": summary,
                    "responses": {"200": ok_json("ok"), "503": {"description": "not ready", **err}},
                }
            },
        )
    spec.path(
        "/logs",
        operations={
            "get": {
                "summary": "Prediction log window (start <= ts < end; UNIX seconds or ISO 8601)",
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": "string"}} for n in ("start", "end", "limit")
                ],
                "responses": {
                    "200": ok_json("records"),
                    "422": {"description": "bad parameter", **err},
                    "503": {"description": "store down", **err},
                },
            }
        },
    )
    spec.path(
        "/metrics",
        operations={
            "get": {
                "summary": "Prometheus metrics (all workers)",
                "responses": {"200": {"description": "text exposition"}},
            }
        },
    )
    spec.path(
        "/model/reload",
        operations={
            "post": {
                "summary": "Start loading a model in the background; swapped in atomically when loaded, the old one serves "
                "meanwhile (admin token: `Authorization: Bearer` or `X-Admin-Token`). model_uri: "
                "`runs:/<32-hex run id>/<path>`, `models:/<MODEL_NAME>@<alias>` or `models:/<MODEL_NAME>/<version>`",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "model_uri": {"type": "string"},
                                    "run_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                                    "challenger_uri": {"type": "string", "nullable": True},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "202": ok_json("reload started: id, status pending, status_url"),
                    "401": {"description": "bad token", **err},
                    "409": {"description": "a reload of this worker is still pending", **err},
                    "422": {"description": "model_uri / run_id / challenger_uri not accepted", **err},
                },
            }
        },
    )
    spec.path(
        "/model/reload/{id}",
        operations={
            "get": {
                "summary": "Status of a reload (admin): pending, loaded, or failed with the reason",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": ok_json("the reload job"),
                    "401": {"description": "bad token", **err},
                    "404": {"description": "unknown reload", **err},
                },
            }
        },
    )
    for path, operations in oip_paths().items():  # the Open Inference Protocol routes (serving/oip.py)
        spec.path(path, operations=operations)
    return spec.to_dict()


@lru_cache(maxsize=4)
def cached_spec(contract_name: str) -> dict:
    return build_spec(load_contract(contract_name))
