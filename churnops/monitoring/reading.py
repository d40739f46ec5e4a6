"""Reading a monitoring window: the one loop the tabular and the image window summaries share.

`read_window` reads the predictions of the `hours` ending `now` (bounded to the newest `max_rows`
when given, `bounded_records`), keeps the rows a track monitors, and fills the summary's common
header (`window`, `n`, `max_rows`/`truncated`, `min_rows`, `model_versions`, `rejections` (the
records the API and consumers refused in the window, by reason and field: churnops/monitoring/rejections.py),
and `status` / `message` when the window holds fewer than `report_min_rows` rows). `choose_reference` picks the
training reference the same way for both: the one given, else the background references' answer
for the window's model runs, else the one `load` downloads for the served run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from churnops.monitoring import reference as references_mod
from churnops.monitoring.rejections import rejection_summary

MIN_SPAN_S = 1e-3  # a span this short is not split again (its oldest rows are taken)


def jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars as Python numbers, NaN and infinities as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return None if not np.isfinite(v) else v
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def window_rows(settings, max_rows: int | None = None) -> int | None:
    """`max_rows`, else DRIFT_MAX_ROWS: every caller (report, trigger, `/drift`) reads the same bounded
    window, so one cached summary serves them all."""
    return max_rows if max_rows is not None else getattr(settings, "drift_max_rows", None)


def bounded_records(store, start: float, end: float, max_rows: int) -> tuple[list[dict], bool]:
    """(the newest `max_rows` predictions of [start, end), oldest first; True when rows were left out).

    The store returns rows oldest first, so a span holding more than what is left is split in two and
    its newer half read first: no read returns more than `max_rows + 1` rows, whatever the window holds.
    """
    over = False

    def take(lo: float, hi: float, left: int) -> list[dict]:
        nonlocal over
        if left <= 0 or hi <= lo:
            over = over or left <= 0
            return []
        got = store.find_predictions(start=lo, end=hi, limit=left + 1)
        if len(got) <= left:
            return got
        over = True
        if hi - lo < MIN_SPAN_S:
            return got[:left]
        mid = (lo + hi) / 2
        newer = take(mid, hi, left)
        return take(lo, mid, left - len(newer)) + newer if len(newer) < left else newer

    records = take(start, end, max_rows)
    return records, over


@dataclass
class WindowRead:
    """The rows of one window and the header every window summary starts with."""

    start: float
    end: float
    records: list[dict]
    truncated: bool
    header: dict = field(default_factory=dict)

    @property
    def enough(self) -> bool:
        """Whether the window holds at least `report_min_rows` rows (else the header says so)."""
        return self.header.get("status") != "insufficient_data"


def read_window(
    store,
    settings,
    hours: float,
    now: float | None = None,
    max_rows: int | None = None,
    keep: Callable[[dict], bool] | None = None,
) -> WindowRead:
    """The predictions of the `hours` ending `now` (default: now) that `keep` accepts, and the header."""
    now = time.time() if now is None else now
    start = now - hours * 3600.0
    if max_rows is None:
        records, truncated = store.find_predictions(start=start, end=now), False
    else:
        records, truncated = bounded_records(store, start, now, max_rows)
    if keep is not None:
        records = [r for r in records if keep(r)]
    header: dict = {
        "window": {"start": start, "end": now, "hours": hours},
        "n": len(records),
        **({"max_rows": max_rows, "truncated": bool(truncated)} if max_rows is not None else {}),
        "min_rows": settings.report_min_rows,
        "model_versions": sorted({str(r["model_version"]) for r in records if r.get("model_version") is not None}),
    }
    if len(records) < settings.report_min_rows:
        header.update(
            status="insufficient_data", message=f"not enough data (n={len(records)} < min {settings.report_min_rows})"
        )
    header["rejections"] = rejection_summary(store, start, now, len(records), settings)  # however few rows
    return WindowRead(start, now, records, truncated, header)


def choose_reference(settings, records: list[dict], reference=None, references=None, load: Callable | None = None):
    """`reference` when given, else `references.get(run ids)` (a `BackgroundReferences`: never calls
    MLflow in this thread), else `load(run id)` of the served run (batch callers)."""
    if reference is not None:
        return reference
    run_ids = [str(r["model_run_id"]) for r in records if r.get("model_run_id")]
    if references is not None:
        return references.get(run_ids)
    return load(references_mod.served_run_id(settings, run_ids))  # looked up at call time (tests replace it)
