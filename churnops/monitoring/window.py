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

import numpy as np
import pandas as pd

from churnops.image.monitor import image_window
from churnops.monitoring import drift as drift_mod
from churnops.monitoring import reference as references_mod
from churnops.monitoring.estimated import window_estimate
from churnops.monitoring.performance import realized_performance
from churnops.monitoring.quality import data_quality
from churnops.monitoring.reading import (  # noqa: F401 (bounded_records, jsonable: re-exported)
    WindowRead,
    bounded_records,
    choose_reference,
    jsonable,
    read_window,
    window_rows,
)
from churnops.shadow_test import SHADOW_ROUTE
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


def answered(record: dict) -> bool:
    """Whether a logged prediction answered someone: shadow mirrors (the candidate's, serving/shadow.py)
    did not, so monitoring windows leave them out."""
    return record.get("route") != SHADOW_ROUTE


def load_window(store, contract, start: float, end: float, max_rows: int | None = None) -> pd.DataFrame:
    """Predictions with start <= ts < end (shadow mirrors left out) and their outcomes; with `max_rows`,
    the newest `max_rows` of them (`df.attrs["truncated"]` says whether rows were left out)."""
    if max_rows is None:
        records, truncated = store.find_predictions(start=start, end=end), False
    else:
        records, truncated = bounded_records(store, start, end, max_rows)
    return window_frame(store, contract, WindowRead(start, end, [r for r in records if answered(r)], truncated))


def window_frame(store, contract, read: WindowRead) -> pd.DataFrame:
    """The rows of a read window as a frame, with their outcomes (feedback given since its start);
    `df.attrs["truncated"]` says whether rows were left out (`max_rows`)."""
    df = predictions_frame(read.records, contract)
    df.attrs["truncated"] = read.truncated
    if len(df):
        df = attach_outcomes(df, store.find_feedback(start=read.start))
    else:
        df["outcome"] = pd.Series(dtype=float)
    return df


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
        rows = window_rows(settings, max_rows)
        return Window(image_window(store, settings, contract, hours, now, reference, references, rows))
    read = read_window(store, settings, hours, now, window_rows(settings, max_rows), keep=answered)
    df = window_frame(store, contract, read)
    out: dict = dict(read.header)
    if not read.enough:
        return Window(jsonable(out), df)
    reference = choose_reference(
        settings,
        read.records,
        reference,
        references,
        lambda run_id: references_mod.load_reference(run_id, settings, contract),
    )
    task = task_for(contract)
    d, perf = summarize_window(df, reference, settings, task)
    quality = data_quality(reference, df, contract, settings, out.get("rejections"))
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
            settings.quality_rejection_rate,
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
