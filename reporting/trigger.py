"""Retraining trigger: start the training deployment when the model's window looks bad.

Conditions (any): drift status critical (>= `retrain_min_critical_features` critical features,
or the prediction distribution critical), or the realized performance of the task on at least
`min_labelled` labelled predictions (`churnops.tasks`: `performance_reasons`): a classifier's AUC
below `auc_floor`, a regression's RMSE above `rmse_ceiling` (else `rmse_ceiling_factor` times the
run's test RMSE), or, when `estimated_auc_floor` (ESTIMATED_AUC_FLOOR, off by default) is set, the
window's estimated AUC (CBPE, before labels: `churnops.monitoring.estimated`) below it, or, when
`retrain_on_quality_failure` is set, a data-quality failure (`churnops.monitoring.quality`). Training
starts at most once per
`retrain_cooldown_hours`; the last start and every decision (with its reasons) are kept in the
prediction store's checkpoints (`retrain:last_started`, `retrain:last_decision`,
`retrain:history`). An optional webhook alert (Slack-compatible) reports starts and
suppressed triggers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

from churnops.model_line import resolved
from churnops.monitoring.performance import outcomes_for
from churnops.monitoring.quality import quality_reasons
from churnops.store.protocols import CheckpointedRecords, CheckpointStore
from churnops.tasks import task_for
from reporting.alerts import send_alert

log = logging.getLogger(__name__)

LAST_STARTED, LAST_DECISION, HISTORY = "retrain:last_started", "retrain:last_decision", "retrain:history"
HISTORY_KEEP = 50


def _num(value, spec: str) -> str:
    """A statistic for a reason text; the summaries carry a non-finite value as None."""
    return "n/a" if value is None else format(value, spec)


def estimated_reasons(estimated: dict | None, settings) -> list[str]:
    """An estimated AUC (CBPE, no labels yet) below `estimated_auc_floor`, when that floor is set."""
    floor = settings.estimated_auc_floor
    est = estimated or {}
    auc = est.get("auc_roc")
    if floor is None or not est.get("available") or auc is None or auc >= floor:
        return []
    band = est.get("auc_band") or [None, None]
    return [
        f"estimated AUC {auc:.3f} (band {_num(band[0], '.3f')}-{_num(band[1], '.3f')}, CBPE on {est.get('n')} "
        f"unlabelled predictions) < ESTIMATED_AUC_FLOOR {floor}"
    ]


def reasons_for(
    drift: dict | None,
    performance: dict | None,
    settings,
    min_labelled: int = 50,
    estimated: dict | None = None,
    quality: dict | None = None,
) -> list[str]:
    """Why training should start (empty list: it should not)."""
    reasons = []
    if drift:
        if drift.get("n_critical", 0) >= settings.retrain_min_critical_features:
            reasons.append(
                f"data drift critical: {drift['n_critical']} feature(s) "
                f"{', '.join(drift.get('critical_features', []))} (max PSI {_num(drift.get('max_psi'), '.3f')})"
            )
        pred = drift.get("prediction") or {}
        if pred.get("status") == "critical":
            reasons.append(
                f"prediction drift critical: PSI {_num(pred.get('psi'), '.3f')}, p={_num(pred.get('p_value'), '.2g')}"
            )

    overall = (performance or {}).get("overall") or {}
    if (performance or {}).get("task") == "image_classification":  # image monitoring hook
        from churnops.image.monitor import performance_reasons

        return reasons + performance_reasons(overall, settings, min_labelled)
    reasons += outcomes_for(task_for((performance or {}).get("task"))).performance_reasons(
        overall, settings, min_labelled
    )
    reasons += estimated_reasons(estimated, settings)
    reasons += quality_reasons(quality, settings)
    return reasons


def key_numbers(drift: dict | None, performance: dict | None, estimated: dict | None = None) -> dict:
    """The numbers of the window summary a decision rests on (kept with the decision)."""
    drift = drift or {}
    pred = drift.get("prediction") or {}
    overall = (performance or {}).get("overall") or {}
    return {
        "max_psi": drift.get("max_psi"),
        "n_critical": drift.get("n_critical"),
        "critical_features": drift.get("critical_features", []),
        "feature_psi": {k: f.get("psi") for k, f in (drift.get("features") or {}).items()},
        "prediction_psi": pred.get("psi"),
        "prediction_status": pred.get("status"),
        "realized_auc": overall.get("auc_roc"),
        "realized_rmse": overall.get("rmse"),
        "realized_accuracy": overall.get("accuracy"),
        "n_labelled": overall.get("n", 0),
        "estimated_auc": (estimated or {}).get("auc_roc"),
        "estimated_auc_band": (estimated or {}).get("auc_band"),
    }


def quality_numbers(quality: dict | None) -> dict:
    """The data-quality status and failing features a decision rests on."""
    return {"quality_status": (quality or {}).get("status"), "quality_failed": (quality or {}).get("failed_features")}


def fresh_training_parameters(collect: Callable[[], dict]) -> dict:
    """Collect the fresh labels into a new snapshot (`collect`: the label collector the flow passes
    in, `flows.labels_flow.labels_collector`); the training deployment's parameters naming it and
    its held-out slice (empty, i.e. the latest snapshot, when too few labels joined)."""
    out = collect()
    if out.get("parameters"):  # an image contract: the image deployment's parameters (a new version, or the parent)
        return dict(out["parameters"]) | ({} if out.get("dataset") else {"labels": out.get("status")})
    if out.get("snapshot"):
        return {"snapshot": out["snapshot"], "holdout": out.get("holdout")}
    return {"labels": out.get("status", "no new snapshot")}


def default_start_training(settings, collect: Callable[[], dict], run=None) -> Callable[[], dict]:
    """Collect fresh labels (`collect`, the label collector the flow passes in), then start the
    training deployment on that snapshot without waiting.

    Returns {"flow_run_id", "parameters"}; `run` is prefect's `run_deployment` unless given.
    """
    settings = resolved(settings)  # the data set's training deployment

    def start() -> dict:
        params = fresh_training_parameters(collect)
        labels_note = params.pop("labels", None)
        runner = run
        if runner is None:
            from prefect.deployments import run_deployment as runner
        fr = runner(settings.training_deployment, timeout=0, tags=["retrain-trigger"], parameters=params)
        return {"flow_run_id": str(fr.id), "parameters": params, "labels": labels_note}

    return start


def evaluate_trigger(
    store: CheckpointStore,
    settings,
    drift: dict | None,
    performance: dict | None,
    start_training: Callable[[], str] | None = None,
    now: float | None = None,
    window: dict | None = None,
    min_labelled: int = 50,
    alert: bool = True,
    dry_run: bool = False,
    estimated: dict | None = None,
    quality: dict | None = None,
) -> dict:
    """Decide, start training when due (respecting the cooldown), record and alert; returns the decision."""
    settings = resolved(settings)  # the data set's training deployment and model name
    now = time.time() if now is None else now
    reasons = reasons_for(drift, performance, settings, min_labelled, estimated, quality)
    last = store.get_checkpoint(LAST_STARTED)
    last_ts = float(last) if last else None
    cooldown_s = settings.retrain_cooldown_hours * 3600.0
    decision = {
        "ts": now,
        "time": datetime.fromtimestamp(now, timezone.utc).isoformat(),
        "reasons": reasons,
        "triggered": bool(reasons),
        "started": False,
        "action": "none",
        "flow_run_id": None,
        "last_started": last_ts,
        "cooldown_hours": settings.retrain_cooldown_hours,
        "window": window,
        "numbers": key_numbers(drift, performance, estimated) | quality_numbers(quality),
        "deployment": settings.training_deployment,
    }
    if reasons:
        if last_ts is not None and now - last_ts < cooldown_s:
            decision["action"] = "cooldown"
            decision["next_allowed"] = last_ts + cooldown_s
        elif dry_run:  # decided and recorded; nothing started, no cooldown consumed
            decision["action"] = "dry_run"
        else:
            starter = start_training
            try:
                if starter is None:  # the flow passes one (it collects the labels first: flows.retrain_flow)
                    raise ValueError("no start_training given: the retrain flow passes default_start_training")
                started = starter()
                if isinstance(started, dict):  # the default starter also says what it trains on
                    decision["parameters"] = started.get("parameters")
                    if started.get("labels"):
                        decision["labels"] = started["labels"]
                    started = started["flow_run_id"]
                decision["flow_run_id"] = started
                decision["started"] = True
                decision["action"] = "started"
                store.set_checkpoint(LAST_STARTED, repr(float(now)))
            except Exception as exc:  # recorded; the next evaluation tries again
                decision["action"] = "start_failed"
                decision["error"] = f"{type(exc).__name__}: {exc}"
                log.error("could not start %s: %s", settings.training_deployment, exc)
    if alert and settings.alert_webhook_url and decision["action"] in ("started", "start_failed", "cooldown"):
        text = {
            "started": f":rotating_light: {settings.model_name} retraining started ({settings.training_deployment})",
            "start_failed": f":x: {settings.model_name} retraining could NOT be started",
            "cooldown": f":hourglass: {settings.model_name} retraining due but in cooldown",
        }[decision["action"]]
        decision["alert"] = send_alert(
            settings.alert_webhook_url,
            text + ": " + "; ".join(reasons),
            settings.alert_timeout_s,
            settings.alert_retries,
        )
    store.set_checkpoint(LAST_DECISION, json.dumps(decision, default=str))
    try:
        history = json.loads(store.get_checkpoint(HISTORY) or "[]")
    except ValueError:
        history = []
    history = ([{k: decision[k] for k in ("ts", "action", "reasons", "flow_run_id")}] + history)[:HISTORY_KEEP]
    store.set_checkpoint(HISTORY, json.dumps(history, default=str))
    log.info("retrain trigger: %s (%s)", decision["action"], "; ".join(reasons) or "no reason")
    return decision


def evaluate_window(
    store: CheckpointedRecords,
    settings,
    contract,
    window_hours: float | None = None,
    now: float | None = None,
    reference=None,
    start_training: Callable[[], str] | None = None,
    dry_run: bool = False,
) -> dict:
    """The window's summary (`churnops.monitoring.window`, shared with the report and `/drift`),
    then `evaluate_trigger` on its drift and realized performance."""
    from churnops.monitoring.window import window_summary

    hours = float(window_hours if window_hours is not None else settings.report_window_hours)
    summary = window_summary(store, settings, contract, hours, now, reference=reference)
    window = {**summary["window"], "n": summary["n"]}
    if summary["status"] == "insufficient_data":
        drift, perf, est, quality = None, None, None, None
        window["note"] = summary["message"]
    else:
        drift, perf = summary["drift"], summary["performance"]
        est, quality = summary.get("estimated_performance"), summary.get("quality")
    return evaluate_trigger(
        store,
        settings,
        drift,
        perf,
        start_training=start_training,
        now=now,
        window=window,
        dry_run=dry_run,
        estimated=est,
        quality=quality,
    )
