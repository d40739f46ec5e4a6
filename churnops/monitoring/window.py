"""The monitoring window: the prediction log of a time window summarized against the training reference.

`window_summary` is the one place this is computed; the report (`reporting.report`), the retraining
trigger (`reporting.trigger`) and `GET /drift/*` (`serving.drift`) all call it. The summary holds

* `window` (start, end, hours), `n` (rows in the window), `min_rows`, `model_versions`
* `status`: `insufficient_data` (fewer than `report_min_rows` rows; then `message` says so and
  nothing else is computed) or the drift status `ok` / `warn` / `critical`
* `reference_run_id`, `drift` (`drift.compute_drift`: every feature and the predictions, every row),
  `performance` (`performance.realized_performance` on the rows with feedback: per task, AUC and
  calibration of a classifier, MAE/RMSE/R² of a regression's feedback values),
  `estimated_performance` (`estimated.window_estimate`: CBPE before labels, with its band, or why
  it is unavailable), `quality` (`quality.data_quality`: missing, out-of-range, unseen categories
  per feature), `verdict`

as plain JSON values (NaN becomes None). For an image contract `compute` hands the window to
`churnops.image.monitor.image_window` (the image monitoring hook; same keys, signals for features). Summaries are cached per process in an LRU of
`CACHE_ENTRIES` windows, each reused for `settings.drift_cache_s` seconds: a window ending "now"
(`now=None`) is one entry per (store, hours), so the trigger run right after a report, or `/drift`
asked twice, does not compute it again. The cached dicts are shared: callers must not modify them.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churnops.monitoring import drift as drift_mod
from churnops.monitoring.estimated import window_estimate
from churnops.monitoring.performance import realized_performance
from churnops.monitoring.quality import data_quality
from churnops.store.protocols import PredictionRecords
from churnops.tasks import task_for

META_COLUMNS = [
    "ts",
    "request_id",
    "source",
    "model_run_id",
    "model_version",
    "route",
    "probability",
    "decision",
    "prediction",
    "latency_ms",
]
CACHE_ENTRIES = 8  # distinct windows kept; the least recently used goes first


# ---- the rows of a window ----------------------------------------------------------------------------


def predictions_frame(records: list[dict], contract) -> pd.DataFrame:
    """Prediction log records -> one row per prediction: contract features + meta columns.

    `prediction` is the served value the drift statistics compare: the task's logged output field
    (`churnops.tasks`: a classifier's `probability`, a regression's predicted value)."""
    if not records:
        return pd.DataFrame(columns=contract.feature_names + META_COLUMNS)
    feats = pd.DataFrame.from_records([r.get("features") or {} for r in records])
    for name, spec in contract.features.items():
        if name not in feats:
            feats[name] = np.nan if spec.kind == "numeric" else None
        elif spec.kind == "numeric":
            feats[name] = pd.to_numeric(feats[name], errors="coerce").astype("float64")
        else:
            col = feats[name].astype(object)
            feats[name] = col.where(col.notna(), None)
    meta = pd.DataFrame.from_records([{k: r.get(k) for k in META_COLUMNS} for r in records])
    df = pd.concat([feats[contract.feature_names], meta], axis=1)
    df["probability"] = pd.to_numeric(df["probability"], errors="coerce").astype(float)
    df["prediction"] = pd.to_numeric(df[task_for(contract).output_field], errors="coerce").astype(float)
    return df


def attach_outcomes(df: pd.DataFrame, feedback: list[dict]) -> pd.DataFrame:
    """Add `outcome` (float, NaN when no feedback yet) by request id; last feedback wins."""
    df = df.copy()
    if not feedback:
        df["outcome"] = np.nan
        return df
    fb = pd.DataFrame.from_records(feedback)
    fb = fb.sort_values("ts").drop_duplicates("request_id", keep="last")
    df["outcome"] = df["request_id"].map(fb.set_index("request_id")["outcome"]).astype(float)
    return df


MIN_SPAN_S = 1e-3  # a span this short is not split again (its oldest rows are taken)


def window_rows(settings, max_rows: int | None = None) -> int | None:
    """`max_rows`, else DRIFT_MAX_ROWS: every caller (report, trigger, `/drift`) reads the same bounded
    window, so one cached summary serves them all."""
    return max_rows if max_rows is not None else getattr(settings, "drift_max_rows", None)


def bounded_records(store: PredictionRecords, start: float, end: float, max_rows: int) -> tuple[list[dict], bool]:
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


def load_window(
    store: PredictionRecords, contract, start: float, end: float, max_rows: int | None = None
) -> pd.DataFrame:
    """Predictions with start <= ts < end and their outcomes (feedback given since `start`); with
    `max_rows`, the newest `max_rows` of them (`df.attrs["truncated"]` says whether rows were left out)."""
    truncated = False
    if max_rows is None:
        records = store.find_predictions(start=start, end=end)
    else:
        records, truncated = bounded_records(store, start, end, max_rows)
    df = predictions_frame(records, contract)
    df.attrs["truncated"] = truncated
    if len(df):
        df = attach_outcomes(df, store.find_feedback(start=start))
    else:
        df["outcome"] = pd.Series(dtype=float)
    return df


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


def summarize_window(df: pd.DataFrame, reference: drift_mod.Reference, settings, task=None) -> tuple[dict, dict]:
    """(drift of every row, realized performance of the labelled rows) of a loaded window; `task`
    (`churnops.tasks`, default: binary classification) picks the realized metrics."""
    th = drift_mod.Thresholds.from_settings(settings)
    d = drift_mod.compute_drift(reference, df, th, min_critical_features=settings.retrain_min_critical_features)
    perf = realized_performance(df[df["outcome"].notna()], task, training=reference.test_metrics)
    return d, perf


# ---- the summary ---------------------------------------------------------------------------------------


@dataclass
class Window:
    """A summary and, when it was computed by this call (not taken from the cache), its rows."""

    summary: dict
    frame: pd.DataFrame | None = None


def compute(
    store: PredictionRecords,
    settings,
    contract,
    hours: float,
    now: float | None = None,
    reference=None,
    references=None,
    max_rows: int | None = None,
) -> Window:
    """Load and summarize the window of `hours` ending `now` (no cache).

    The reference is `reference`, else `references.get(run ids)` (a `BackgroundReferences`: never
    calls MLflow in this thread), else downloaded here (`reference.load_reference`: batch callers).
    """
    if getattr(contract, "task", None) == "image_classification":  # image monitoring hook
        from churnops.image.monitor import image_window

        rows = window_rows(settings, max_rows)
        return Window(image_window(store, settings, contract, hours, now, reference, references, rows))
    now = time.time() if now is None else now
    start = now - hours * 3600.0
    max_rows = window_rows(settings, max_rows)
    df = load_window(store, contract, start, now, max_rows)
    out: dict = {
        "window": {"start": start, "end": now, "hours": hours},
        "n": int(len(df)),
        **({"max_rows": max_rows, "truncated": bool(df.attrs.get("truncated"))} if max_rows is not None else {}),
        "min_rows": settings.report_min_rows,
        "model_versions": sorted({str(v) for v in df["model_version"].dropna().unique()}) if len(df) else [],
    }
    if len(df) < settings.report_min_rows:
        out.update(
            status="insufficient_data", message=f"not enough data (n={len(df)} < min {settings.report_min_rows})"
        )
        return Window(jsonable(out), df)
    if reference is None:
        run_ids = df["model_run_id"].dropna().astype(str).tolist()
        if references is not None:
            reference = references.get(run_ids)
        else:
            from churnops.monitoring.reference import load_reference, served_run_id

            reference = load_reference(served_run_id(settings, run_ids), settings, contract)
    task = task_for(contract)
    d, perf = summarize_window(df, reference, settings, task)
    quality = data_quality(reference, df, contract, settings)
    out.update(
        status=d["status"],
        reference_run_id=reference.run_id,
        drift=d,
        performance=perf,
        estimated_performance=window_estimate(df, reference, settings, task.name, perf),
        quality=quality,
        verdict={
            "drift": d["status"],
            "critical_features": d["critical_features"],
            "prediction": (d.get("prediction") or {}).get("status"),
            "quality": quality["status"],
        },
    )
    return Window(jsonable(out), df)


@dataclass(frozen=True)
class CacheKey:
    store: str
    hours: float
    end: float | None  # None: the window ending when it is asked for
    reference: str  # "served": the reference of the window's own model runs
    params: tuple
    max_rows: int | None = None


_CACHE: OrderedDict[CacheKey, tuple[float, dict, tuple]] = OrderedDict()
_LOCK = threading.Lock()


def cache_key(
    store, settings, contract, hours: float, now: float | None, reference, max_rows: int | None = None
) -> CacheKey:
    """What a summary depends on: the store's data, the window, the reference and the thresholds."""
    store_key = getattr(store, "cache_key", None)
    return CacheKey(
        store=store_key() if callable(store_key) else f"{type(store).__name__}@{id(store)}",
        hours=round(float(hours), 9),
        end=None if now is None else float(now),
        reference="served" if reference is None else f"{reference.run_id}@{id(reference)}",
        params=(
            settings.psi_warn,
            settings.psi_critical,
            settings.drift_p_value,
            settings.report_min_rows,
            settings.retrain_min_critical_features,
            settings.estimated_min_rows,
            settings.quality_missing_increase,
            settings.quality_out_of_range_rate,
            settings.quality_unseen_rate,
            contract.fingerprint(),
        ),
        max_rows=max_rows,
    )


def remember(key: CacheKey, summary: dict, ttl_s: float, keep: tuple = ()) -> None:
    """Cache `summary`: expired entries go, then the least recently used beyond `CACHE_ENTRIES`.

    `keep` holds the objects an id in the key names (store, reference), so no other object can
    take that id while the entry lives.
    """
    with _LOCK:
        t = time.monotonic()
        _CACHE[key] = (t, summary, keep)
        _CACHE.move_to_end(key)
        for k in [k for k, (t0, _, _) in _CACHE.items() if t - t0 >= ttl_s]:
            del _CACHE[k]
        while len(_CACHE) > CACHE_ENTRIES:
            _CACHE.popitem(last=False)


def cached(key: CacheKey, ttl_s: float) -> dict | None:
    """The cached summary under `key` when younger than `ttl_s` seconds (marked recently used)."""
    with _LOCK:
        hit = _CACHE.get(key)
        if hit and time.monotonic() - hit[0] < ttl_s:
            _CACHE.move_to_end(key)
            return hit[1]
    return None


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def summarize(
    store: PredictionRecords,
    settings,
    contract,
    hours: float,
    now: float | None = None,
    reference=None,
    references=None,
    fresh: bool = False,
    max_rows: int | None = None,
) -> Window:
    """The window summary of `hours` ending `now` (default: now), from the cache when it is there.

    `fresh=True` computes it again (and caches the result); a computed `Window` also carries its rows.
    """
    max_rows = window_rows(settings, max_rows)
    key = cache_key(store, settings, contract, hours, now, reference, max_rows)
    if not fresh:
        hit = cached(key, settings.drift_cache_s)
        if hit is not None:
            return Window(hit)
    w = compute(store, settings, contract, hours, now, reference=reference, references=references, max_rows=max_rows)
    remember(key, w.summary, settings.drift_cache_s, keep=(store, reference))
    return w


def window_summary(
    store,
    settings,
    contract,
    hours: float,
    now: float | None = None,
    reference=None,
    references=None,
    max_rows: int | None = None,
) -> dict:
    """`summarize(...).summary`: the summary dict of the window (cached; do not modify it); `max_rows`
    bounds the rows read (the newest; `GET /drift/*` passes DRIFT_MAX_ROWS)."""
    return summarize(
        store, settings, contract, hours, now, reference=reference, references=references, max_rows=max_rows
    ).summary
