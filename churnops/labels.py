"""Fresh labelled data: outcomes sent to `/feedback` joined with the features logged for the same request.

`join_labels` is pure (records in, frame + report out): every label (a 0/1 outcome, or a
regression's observed value: what counts as valid is the contract's task, `churnops.tasks`) is matched, by its
`request_id`, to the latest prediction logged for that id at or before the label's time (HTTP
and stream alike), its features re-validated with the data contract. Labels for ids never
predicted, labels given twice (the same outcome: used once; conflicting: dropped), labels with an
invalid outcome and rows whose logged features break the contract are counted and reported,
never used. `build_training_set` applies the declared policy (append / sliding window / replace)
to the parent snapshot and the new rows, after setting aside a held-out slice of the newest
labelled rows for evaluation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from churnops.contract import DatasetContract, validate_record
from churnops.monitoring.performance import outcomes_for
from churnops.tasks import task_for

Policy = Literal["append", "sliding", "replace"]


@dataclass
class LabelReport:
    """What happened to every label in the window."""

    labels: int = 0  # feedback records read
    joined: int = 0  # rows produced (one per request id)
    unknown_ids: int = 0  # no prediction logged for the id (at or before the label)
    duplicates: int = 0  # extra labels for an id, same outcome (used once)
    conflicting: int = 0  # ids labelled with different outcomes (dropped)
    invalid_outcomes: int = 0  # outcome not valid for the task (not 0/1; not a number in the target's range)
    invalid_features: int = 0  # logged features break the contract (dropped)
    late: int = 0  # joined labels that came more than `late_after_s` after the prediction
    by_source: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)  # a few examples, for the report

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def join_labels(
    predictions: list[dict],
    feedback: list[dict],
    contract: DatasetContract,
    late_after_s: float = 86_400.0,
    max_problems: int = 20,
) -> tuple[pd.DataFrame, LabelReport]:
    """Join labels to logged features by `request_id`; returns (clean frame with target and
    `label_ts`, `prediction_ts`, `request_id`, `source` columns, report)."""
    task = outcomes_for(task_for(contract))  # what a valid observed outcome is (0/1, or a value in the target's range)
    rep = LabelReport(labels=len(feedback))
    by_id: dict[str, list[dict]] = defaultdict(list)
    for p in predictions:
        rid = p.get("request_id") or p.get("_id")
        if rid is not None:
            by_id[str(rid)].append(p)
    labels: dict[str, list[tuple[float, int | float]]] = defaultdict(list)
    for f in feedback:
        rid = str(f.get("request_id"))
        out, problem = task.observed(f.get("outcome"), contract)
        if problem is not None:
            rep.invalid_outcomes += 1
            if len(rep.problems) < max_problems:
                rep.problems.append(f"{rid}: {problem}")
            continue
        labels[rid].append((float(f.get("ts") or 0.0), out))
    target = contract.target.name
    rows = []
    for rid, got in labels.items():
        outcomes = {o for _, o in got}
        if len(outcomes) > 1:
            rep.conflicting += 1
            if len(rep.problems) < max_problems:
                rep.problems.append(f"{rid}: conflicting outcomes {sorted(outcomes)}")
            continue
        rep.duplicates += len(got) - 1
        label_ts, outcome = max(got)
        before = [p for p in by_id.get(rid, []) if float(p.get("ts", 0.0)) <= label_ts]
        if not before:
            rep.unknown_ids += 1
            if len(rep.problems) < max_problems:
                rep.problems.append(f"{rid}: no prediction logged for this request id")
            continue
        pred = max(before, key=lambda p: float(p.get("ts", 0.0)))
        feats = {
            k: (v if v is not None else (contract.unknown_markers[0] if contract.unknown_markers else v))
            for k, v in (pred.get("features") or {}).items()
        }
        checked = validate_record(feats, contract)
        if not checked.ok:
            rep.invalid_features += 1
            if len(rep.problems) < max_problems:
                rep.problems.append(f"{rid}: " + "; ".join(f"{k}: {v}" for k, v in list(checked.errors.items())[:3]))
            continue
        if label_ts - float(pred["ts"]) > late_after_s:
            rep.late += 1
        src = str(pred.get("source", "unknown"))
        rep.by_source[src] = rep.by_source.get(src, 0) + 1
        rows.append(
            {
                **checked.values,
                target: outcome,
                "request_id": rid,
                "source": src,
                "prediction_ts": float(pred["ts"]),
                "label_ts": label_ts,
            }
        )
    rep.joined = len(rows)
    cols = [*contract.feature_names, target, "request_id", "source", "prediction_ts", "label_ts"]
    df = pd.DataFrame(rows, columns=cols).sort_values(["label_ts", "request_id"], kind="stable").reset_index(drop=True)
    return df, rep


def build_training_set(
    parent: pd.DataFrame | None,
    new: pd.DataFrame,
    contract: DatasetContract,
    policy: Policy = "append",
    window_rows: int | None = None,
    holdout_fraction: float = 0.2,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training frame, held-out slice): the newest `holdout_fraction` of `new` (by label time) is
    held out; the rest joins the parent per `policy` (append; sliding: the newest `window_rows`
    rows, parent rows counting as older; replace: the new rows only)."""
    if policy not in ("append", "sliding", "replace"):
        raise ValueError(f"label policy {policy!r}: expected append, sliding or replace")
    if policy == "sliding" and not window_rows:
        raise ValueError("label policy sliding needs LABEL_WINDOW_ROWS > 0")
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout fraction {holdout_fraction}: expected 0 <= f < 1")
    cols = [*contract.feature_names, contract.target.name]
    new = new.sort_values("label_ts", kind="stable") if "label_ts" in new else new
    n_hold = int(round(len(new) * holdout_fraction))
    holdout = new.iloc[len(new) - n_hold :][cols].reset_index(drop=True)
    fresh = new.iloc[: len(new) - n_hold][cols]
    if policy == "replace" or parent is None:
        train = fresh
    else:
        train = pd.concat([parent[cols], fresh], ignore_index=True)
        if policy == "sliding":
            train = train.iloc[-int(window_rows) :]
    return train.reset_index(drop=True), holdout
