"""What a prediction answers, per tabular task: the serving side of `churnops.tasks`.

The contract's task (`churnops.tasks.task_for`) picks the model, its metrics and evaluation in the
core; `answers_for(task)` picks how the servers answer with it: the fields of an answer (HTTP, batch,
stream) and of a log entry, the decision, the metrics' labels, the OpenAPI schemas and the
/feedback body's parsing.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from churnops.tasks import Task
from serving.encoding import dumps


def batch_items(rids: list[str], probabilities: list[float], decisions: list[int], m) -> list[bytes]:
    """The JSON object of each row of a batch answer, with `response_body`'s fields in its order,
    joined from pieces: the model's fields are encoded once (a dict per row cost 40% more)."""
    tail = dumps({"threshold": m.threshold, "model_run_id": m.run_id, "model_version": m.version, "route": m.route})
    yes, no = b',"churn":true,"decision":1,' + tail[1:], b',"churn":false,"decision":0,' + tail[1:]
    d = dumps
    return [
        b'{"request_id":' + d(r) + b',"probability":' + d(p) + (yes if c else no)
        for r, p, c in zip(rids, probabilities, decisions)
    ]


class BinaryAnswers:
    """A classifier's answer: probability, decision 0/1 at the model's threshold."""

    value_metric: ClassVar[str] = "probability"  # the `serving.metrics.Metrics` histogram of served values

    def decision_label(self, d: int | None) -> str:
        """The predictions counter's `decision` label of one prediction."""
        return str(d)

    feedback_summary: ClassVar[str] = "`outcome` 0/1 (or a `label`)"  # what /feedback takes, in a sentence

    def describe(self, contract) -> str:
        """What a prediction answers, for the API description."""
        name = contract.target.name
        return f"{name[:1].upper()}{name[1:]} probability and decision"

    def answer_schema(self) -> dict:
        """OpenAPI properties of a prediction's own fields (`answer`)."""
        return {
            "probability": {"type": "number", "minimum": 0, "maximum": 1},
            "churn": {"type": "boolean"},
            "decision": {"type": "integer", "enum": [0, 1]},
            "threshold": {"type": "number"},
        }

    def feedback_schema(self, contract) -> dict:
        """OpenAPI properties of a /feedback body besides `request_id` (`parse_feedback`)."""
        return {
            "outcome": {"type": "integer", "enum": [0, 1], "description": "realized outcome (1: positive)"},
            "label": {"type": "string", "enum": list(contract.target.labels or []), "description": "or a label"},
        }

    def decide(self, p: float, threshold: float | None) -> int:
        return int(p >= threshold)

    def answer(self, p: float, d: int | None, threshold: float | None) -> dict:
        """A prediction's own fields in an answer (HTTP, batch, stream)."""
        return {"probability": p, "churn": bool(d), "decision": d, "threshold": threshold}

    def log_fields(self, p: float, d: int | None) -> dict:
        """A prediction's own fields in the prediction log."""
        return {"probability": p, "decision": d}

    def output_columns(self, values: np.ndarray, threshold: float | None) -> dict[str, np.ndarray]:
        """A batch's prediction columns in the log (`log_fields`, column-wise)."""
        return {"probability": values, "decision": (values >= threshold).astype(np.int64)}

    def batch_items(self, rids: list[str], cols: dict[str, np.ndarray], m) -> list[bytes]:
        return batch_items(rids, cols["probability"].tolist(), cols["decision"].tolist(), m)

    def decision_counts(self, cols: dict[str, np.ndarray]) -> dict[str, int]:
        """Rows per decision label (the predictions counter)."""
        positives = int(cols["decision"].sum())
        return {"1": positives, "0": len(cols["decision"]) - positives}

    def parse_feedback(self, data: dict, contract) -> tuple[Any, dict[str, str], str]:
        """(outcome 0/1, problems by field, answer key) of a /feedback body: `outcome` (or `actual`)
        0/1/true/false, or a `label` among the contract's labels."""
        details: dict[str, str] = {}
        outcome = data.get("outcome", data.get("actual"))
        label = data.get("label")
        if outcome is None and label is not None:
            outcome = contract.validator().outcome_of(label)  # the contract's labels, its compiled validator
            if outcome is None:
                details["label"] = (
                    f"unknown label {str(label)[:40]!r}; expected one of {contract.validator().label_names}"
                )
        elif isinstance(outcome, bool):
            outcome = int(outcome)
        if "label" not in details:
            if outcome not in (0, 1) or isinstance(outcome, float) and outcome not in (0.0, 1.0):
                details["outcome"] = "expected 0 or 1 (or a `label`)"
        return (int(outcome) if not details else None), details, "outcome"


class RegressionAnswers:
    """A regression's answer: the predicted value."""

    value_metric: ClassVar[str] = "predicted_value"

    def decision_label(self, d: int | None) -> str:
        return "none"

    feedback_summary: ClassVar[str] = "the observed `value` of the target"

    def describe(self, contract) -> str:
        return f"Predicted {contract.target.name} (regression)"

    def answer_schema(self) -> dict:
        return {"prediction": {"type": "number", "description": "the predicted value of the target"}}

    def feedback_schema(self, contract) -> dict:
        t = contract.target
        p: dict = {"type": "number", "description": f"the observed {t.name} (also accepted as `outcome`)"}
        if t.min is not None:
            p["minimum"] = t.min
        if t.max is not None:
            p["maximum"] = t.max
        return {"value": p}

    def decide(self, p: float, threshold: float | None) -> None:
        return None

    def answer(self, p: float, d: int | None, threshold: float | None) -> dict:
        return {"prediction": p}

    def log_fields(self, p: float, d: int | None) -> dict:
        return {"prediction": p}

    def output_columns(self, values: np.ndarray, threshold: float | None) -> dict[str, np.ndarray]:
        return {"prediction": values}

    def batch_items(self, rids: list[str], cols: dict[str, np.ndarray], m) -> list[bytes]:
        tail = dumps({"model_run_id": m.run_id, "model_version": m.version, "route": m.route})
        d = dumps
        return [
            b'{"request_id":' + d(r) + b',"prediction":' + d(v) + b"," + tail[1:]
            for r, v in zip(rids, cols["prediction"].tolist())
        ]

    def decision_counts(self, cols: dict[str, np.ndarray]) -> dict[str, int]:
        return {"none": len(cols["prediction"])}

    def parse_feedback(self, data: dict, contract) -> tuple[Any, dict[str, str], str]:
        """(observed value, problems by field, answer key) of a /feedback body: `value` (or
        `outcome`/`actual`), a finite JSON number."""
        key = next((k for k in ("value", "outcome", "actual") if k in data), "value")
        v = data.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            shown = "null" if v is None else (repr(v)[:40] if isinstance(v, (int, float, str)) else type(v).__name__)
            return None, {key: f"expected a finite number (the observed {contract.target.name}), got {shown}"}, "value"
        t = contract.target
        if (t.min is not None and v < t.min) or (t.max is not None and v > t.max):
            return None, {key: f"value {v} outside the target's range [{t.min:g}, {t.max:g}]"}, "value"
        return float(v), {}, "value"


Answers = BinaryAnswers | RegressionAnswers
ANSWERS: dict[str, Answers] = {"binary_classification": BinaryAnswers(), "regression": RegressionAnswers()}


def answers_for(task: Task) -> Answers:
    """How the servers answer for `task` (a `churnops.tasks` object)."""
    return ANSWERS[task.name]
