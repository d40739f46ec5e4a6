"""`POST /feedback`: the real outcome of a prediction, joined to it by request_id."""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify

from serving import guards
from serving.inference import REQUEST_ID_RULE, BadInput, valid_request_id
from serving.oip import feedback_target
from serving.routes.state import serving_state

feedback_blueprint = Blueprint("feedback", __name__)


@feedback_blueprint.post("/feedback")
def feedback():
    state = serving_state()
    data = state.body_json()
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
    # classifiers: outcome 0/1 or a label; regressions: a finite `value` (churnops.tasks); images: a class
    # `model`: a model served under /v2, whose own line takes the label (serving/oip.py); else the default
    task, contract, flog = feedback_target(current_app.extensions["oip"], data, state)
    outcome, problems, key = task.parse_feedback(data, contract)
    details |= problems
    if details:
        raise BadInput("invalid feedback", details, "invalid_feedback", 422)
    ts = time.time()
    rid = str(rid).strip()
    flog.submit_feedback(rid, outcome, ts)
    return jsonify({"request_id": rid, key: outcome, "ts": ts, "status": "accepted"}), 202
