"""Flask blueprint of the API: live drift of the recent window.

* `GET /drift/report?hours=3` — JSON: per-feature PSI / KS or chi-squared p-value / status,
  prediction drift, realized performance by model version and route, window and n.
* `GET /drift/metrics` — the same numbers as Prometheus text (scrape job `churn-drift`).

The training reference is read from `<state_dir>/reference-cache/`; when it is not there yet a
background thread fetches it from MLflow and the request answers 503 with Retry-After (MLflow is
never called on a request thread). The numbers are `churnops.monitoring.window.window_summary`, the
same function (and per-process cache: an LRU of `CACHE_ENTRIES` windows, each kept `drift_cache_s`
seconds) the report and the retraining trigger use. `hours` must be a finite number in (0, 2160]: other
values are a 422; it is rounded up (`window_hours`) and at most DRIFT_MAX_ROWS rows, the newest, are read. Each answer also sets the multiprocess-safe gauges of `churnops.monitoring.gauges`
shown by the API's `/metrics`.
"""

from __future__ import annotations

import logging
import math
import threading

from flask import Blueprint, Response, current_app, jsonify, request

from churnops.contract import load_any_contract as load_contract
from churnops.model_line import for_dataset
from churnops.monitoring.gauges import drift_exposition, gauges
from churnops.redact import redact
from churnops.settings import get_settings
from churnops.store.factory import open_store
from churnops.store.protocols import ReportStore

log = logging.getLogger(__name__)

drift_blueprint = Blueprint("drift", __name__, url_prefix="/drift")

MAX_HOURS = 24 * 90
_LOCK = threading.Lock()


def _context():
    """(settings, contract, store) from the API's state, or opened from settings."""
    state = current_app.extensions.get("churn")
    if state is not None:  # image monitoring hook: an image server has an image contract instead
        return state.settings, state.contract if state.contract is not None else state.image_contract, state.store

    s = for_dataset(get_settings())  # the data set's own prediction log
    store = current_app.extensions.get("drift_store")
    if store is None:
        store = current_app.extensions["drift_store"] = open_store(s)
    return s, load_contract(s.dataset), store


def _compute(hours: float) -> dict:
    """The shared window summary (`churnops.monitoring.window`: its LRU of windows, each kept
    `drift_cache_s` seconds); every answer also sets the drift gauges of `/metrics`."""
    from churnops.monitoring.window import window_summary

    s, contract, store = _context()
    result = window_summary(store, s, contract, hours, references=_references(s, contract))  # DRIFT_MAX_ROWS rows
    result = {**result, "last_report_ts": last_report_ts(store)}  # a copy: the cached summary is shared
    try:
        gauges().update(result)
    except Exception:  # metrics never break the endpoint
        log.exception("could not update drift gauges")
    return result


def last_report_ts(store: ReportStore) -> float | None:
    """When the newest report was written (the stale-report alert's input); None when unknown."""
    try:
        latest = store.list_reports(1)
    except Exception:  # the store being away never breaks the drift answer
        return None
    return float(latest[0]["ts"]) if latest else None


def _references(settings, contract):
    """The app's `BackgroundReferences` (MLflow is called only from its background thread)."""
    from churnops.monitoring.reference import BackgroundReferences

    refs = current_app.extensions.get("drift_references")
    if refs is None:
        if getattr(contract, "task", None) == "image_classification":  # image monitoring hook
            from churnops.image.monitor import ImageReferences as BackgroundReferences
        with _LOCK:
            refs = current_app.extensions.setdefault("drift_references", BackgroundReferences(settings, contract))
    return refs


def _unavailable(exc: Exception) -> tuple[dict, int | None]:
    """(answer body, Retry-After seconds or None) for a drift computation that failed."""
    from churnops.monitoring.reference import ReferenceUnavailable

    retry = getattr(exc, "retry_after", None)
    if isinstance(exc, ReferenceUnavailable):  # expected while MLflow is away: no trace, URLs redacted
        if retry is None:
            log.warning("drift unavailable: %s", redact(exc))
    else:
        log.exception("drift computation failed")
    return {
        "error": "drift report unavailable",
        "details": {"reason": redact(f"{type(exc).__name__}: {exc}")[:500]},
    }, retry


def _hours() -> float:
    raw = request.args.get("hours")
    if raw is None:
        st = current_app.extensions.get("churn")
        return float((st.settings if st else get_settings()).report_window_hours)
    try:
        hours = float(raw)
    except ValueError:
        raise ValueError(f"expected a number of hours, got {raw[:40]!r}") from None
    if not math.isfinite(hours) or not 0 < hours <= MAX_HOURS:
        raise ValueError(f"expected a finite number of hours in (0, {MAX_HOURS}], got {raw[:40]!r}")
    return window_hours(hours)


def window_hours(hours: float) -> float:
    """`hours` rounded up to the minute below 1 h, the quarter hour below 24 h, the hour above: the
    window (and its cache key) is one of at most 2,300 values, so `hours=2159.91`, `2159.92`, ...
    share one computation instead of each computing (and evicting) its own."""
    per_hour = 60 if hours < 1 else 4 if hours < 24 else 1
    return min(float(MAX_HOURS), math.ceil(round(hours * per_hour, 9)) / per_hour)


@drift_blueprint.get("/report")
def drift_report():
    try:
        hours = _hours()
    except ValueError as exc:
        return jsonify({"error": "invalid query", "details": {"hours": str(exc)}}), 422
    try:
        return jsonify(_compute(hours))
    except Exception as exc:
        body, retry = _unavailable(exc)
        resp = jsonify(body)
        resp.status_code = 503
        resp.headers["Retry-After"] = str(retry or 30)
        return resp


@drift_blueprint.get("/metrics")
def drift_metrics():
    from prometheus_client import CONTENT_TYPE_LATEST

    try:
        hours = _hours()
    except ValueError as exc:
        return Response(f"# invalid query: hours: {exc}\n", status=422, content_type="text/plain; charset=utf-8")
    try:
        body = drift_exposition(_compute(hours))
    except Exception as exc:
        body, retry = _unavailable(exc)
        return Response(
            f"# drift unavailable: {type(exc).__name__}\n",
            status=503,
            content_type=CONTENT_TYPE_LATEST,
            headers={"Retry-After": str(retry or 30)},
        )
    return Response(body, content_type=CONTENT_TYPE_LATEST)
