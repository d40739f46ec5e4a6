"""A window's predictions read from the store in bounded pieces, and its numbers as plain JSON values
(shared by the tabular window, `churnops.monitoring.window`, and the image one, `churnops.image.monitor`)."""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_SPAN_S = 1e-3  # a span this short is not split again (its oldest rows are taken)


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
