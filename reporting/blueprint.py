"""Flask blueprint registered by the API when present: live drift of the recent window.

* `GET /drift/report?hours=3` — JSON: per-feature PSI / KS or chi-squared p-value / status,
  prediction drift, realized performance by model version and route, window and n.
* `GET /drift/metrics` — the same numbers as Prometheus text (scrape job `churn-drift`).

The training reference is read from `<state_dir>/reference-cache/`; when it is not there yet a
background thread fetches it from MLflow and the request answers 503 with Retry-After (MLflow is
never called on a request thread). Results are cached per process for `drift_cache_s` seconds, in a
small LRU of `CACHE_ENTRIES` windows (`hours` must be a finite number in (0, 2160]: other values are a
422); each computation also sets the multiprocess-safe gauges of `reporting.metrics` shown by the API's
`/metrics`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict

from flask import Blueprint, Response, current_app, jsonify, request

log = logging.getLogger(__name__)

drift_blueprint = Blueprint("drift", __name__, url_prefix="/drift")

CACHE_ENTRIES = 8  # distinct (store, hours) windows kept; the least recently used goes first
MAX_HOURS = 24 * 90
_CACHE: OrderedDict[tuple[int, float], tuple[float, dict]] = OrderedDict()
_LOCK = threading.Lock()


def _context():
    """(settings, contract, store) from the API's state, or opened from settings."""
    state = current_app.extensions.get("churn")
    if state is not None:
        return state.settings, state.contract, state.store
    from churnops.contract import load_contract
    from churnops.settings import get_settings

    s = get_settings()
    store = current_app.extensions.get("drift_store")
    if store is None:
        from serving.store_factory import open_store

        store = current_app.extensions["drift_store"] = open_store(s)
    return s, load_contract(s.dataset), store


def live_drift(
    store, settings, contract, hours: float, now: float | None = None, reference=None, references=None
) -> dict:
    """Drift + realized performance of the last `hours` (no Evidently, no files).

    `references` (a `BackgroundReferences`) supplies the reference without calling MLflow here;
    without it the reference is downloaded in this thread (batch callers only).
    """
    from reporting.reference import load_reference, served_run_id
    from reporting.report import _jsonable, load_window, summarize_window

    now = time.time() if now is None else now
    df = load_window(store, contract, now - hours * 3600.0, now)
    out = {
        "window": {"start": now - hours * 3600.0, "end": now, "hours": hours},
        "n": int(len(df)),
        "min_rows": settings.report_min_rows,
    }
    if len(df) < settings.report_min_rows:
        out.update(
            status="insufficient_data", message=f"not enough data (n={len(df)} < min {settings.report_min_rows})"
        )
        return out
    if reference is None:
        run_ids = df["model_run_id"].dropna().astype(str).tolist()
        reference = (
            references.get(run_ids)
            if references is not None
            else load_reference(served_run_id(settings, run_ids), settings, contract)
        )
    d, perf = summarize_window(df, reference, settings)
    out.update(
        status=d["status"],
        reference_run_id=reference.run_id,
        drift=d,
        performance=perf,
        verdict={
            "drift": d["status"],
            "critical_features": d["critical_features"],
            "prediction": (d.get("prediction") or {}).get("status"),
        },
    )
    return _jsonable(out)


def _compute(hours: float) -> dict:
    s, contract, store = _context()
    key = (id(store), hours)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit and time.monotonic() - hit[0] < s.drift_cache_s:
            _CACHE.move_to_end(key)
            return hit[1]
    result = live_drift(store, s, contract, hours, references=_references(s, contract))
    try:
        from reporting.metrics import gauges

        gauges().update(result)
    except Exception:  # metrics never break the endpoint
        log.exception("could not update drift gauges")
    with _LOCK:
        _remember(key, result, s.drift_cache_s)
    return result


def _remember(key: tuple[int, float], result: dict, ttl_s: float) -> None:
    """Cache `result` (under `_LOCK`): expired entries go, then the least recently used beyond the bound."""
    now = time.monotonic()
    _CACHE[key] = (now, result)
    _CACHE.move_to_end(key)
    for k in [k for k, (t, _) in _CACHE.items() if now - t >= ttl_s]:
        del _CACHE[k]
    while len(_CACHE) > CACHE_ENTRIES:
        _CACHE.popitem(last=False)


def _references(settings, contract):
    """The app's `BackgroundReferences` (MLflow is called only from its background thread)."""
    from reporting.reference import BackgroundReferences

    refs = current_app.extensions.get("drift_references")
    if refs is None:
        with _LOCK:
            refs = current_app.extensions.setdefault("drift_references", BackgroundReferences(settings, contract))
    return refs


def _unavailable(exc: Exception) -> tuple[dict, int | None]:
    """(answer body, Retry-After seconds or None) for a drift computation that failed."""
    from churnops.redact import redact
    from reporting.reference import ReferenceUnavailable

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
    from churnops.settings import get_settings

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
    return hours


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

    from reporting.metrics import drift_exposition

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
