"""The prediction report: a window of the prediction log against the model's training reference.

`build_report` summarizes the window (predictions + feedback) of a `PredictionStore` with
`churnops.monitoring.window` (our drift statistics and realized performance on every row; the same
numbers the trigger and `/drift` answer), writes into the reports directory

* `<id>.html`          Evidently: data drift (features + prediction), data summary
* `<id>-quality.html`  Evidently: the task's quality on the rows that have outcomes (classification
                       quality; a regression's MAE, RMSE, R² and error plots on the feedback values)
* `<id>.json`          summary: window, n, drift per feature, prediction drift, performance

For an image server (an image contract) `<id>.html` is instead the image drift section of
`churnops.image.monitor` (channel Wasserstein, embedding MMD, predicted classes, thumbnails).

regenerates `index.html` and stores the headline in the store (`save_report`). Windows larger
than `report_max_rows` are sampled (seeded) for the Evidently report, which keeps a report
under 10 MB; our statistics and realized performance use every row. With fewer than
`report_min_rows` rows it records "not enough data" instead of failing.
"""

from __future__ import annotations

import html
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from churnops.image.monitor import image_section_html
from churnops.model_line import CHURN_CONTRACT, resolved
from churnops.monitoring.attribution import global_attribution, load_explainer
from churnops.monitoring.drift import Reference
from churnops.monitoring.performance import outcomes_for
from churnops.monitoring.reading import jsonable
from churnops.monitoring.reference import load_reference
from churnops.monitoring.window import summarize
from churnops.store.protocols import MonitoringStore
from churnops.tasks import task_for
from reporting.index import write_index

log = logging.getLogger(__name__)

MIN_LABELLED_FOR_QUALITY = 20


def reports_dir(settings) -> Path:
    d = settings.state_path(settings.reports_dir, "reports")
    d.mkdir(parents=True, exist_ok=True)
    return d


def sample_rows(df: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    if len(df) <= max_rows:
        return df
    return df.sample(max_rows, random_state=seed).sort_values("ts")


# ---- Evidently ------------------------------------------------------------------------------------------


def evidently_reports(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    contract,
    threshold: float,
    html_path: Path,
    quality_path: Path | None,
) -> dict:
    """Write the drift/summary report and (when possible) the quality report; returns sizes."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    cols = contract.feature_names + ["prediction"]
    dd = DataDefinition(
        numerical_columns=contract.numeric_features + ["prediction"],
        categorical_columns=contract.categorical_features + contract.ordinal_features,
    )
    cur = current[cols]  # `prediction`: the task's served value (churnops.monitoring.window)
    ref = reference[cols]
    snap = Report([DataDriftPreset(columns=cols), DataSummaryPreset(columns=cols)]).run(
        current_data=Dataset.from_pandas(cur, data_definition=dd),
        reference_data=Dataset.from_pandas(ref, data_definition=dd),
    )
    snap.save_html(str(html_path))
    out = {"html_bytes": html_path.stat().st_size, "quality_bytes": None}
    target = contract.target.name
    lab = current[current["outcome"].notna()]
    if quality_path is not None and len(lab) >= MIN_LABELLED_FOR_QUALITY and target in reference:
        q = outcomes_for(task_for(contract)).quality_report(
            lab, reference, target, threshold
        )  # per task; None: not possible
        if q is not None:
            q.save_html(str(quality_path))
            out["quality_bytes"] = quality_path.stat().st_size
    return out


REALIZED_LABELS = {
    "n": "labelled predictions",
    "mae": "MAE",
    "rmse": "RMSE",
    "r2": "R²",
    "share_off": "share off by more than the tolerance",
    "bias": "mean error (predicted - observed)",
    "auc_roc": "AUC-ROC",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "brier": "Brier score",
    "ece": "expected calibration error",
    "accuracy": "accuracy",
}


def realized_section(performance: dict) -> str:
    """Our realized-performance table (every labelled row, the task's metrics; the training run's
    test value beside it when known) as an HTML section."""
    overall = (performance or {}).get("overall") or {}
    training = overall.get("training") or {}
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{_cell(overall[k])}</td><td>{_cell(training.get(k))}</td></tr>"
        for k, label in REALIZED_LABELS.items()
        if k in overall
    )
    return (
        '<section id="realized-performance" style="font-family:sans-serif;margin:1em">'
        f"<h2>Realized performance ({html.escape(str(performance.get('task', '')))}, feedback on every row)</h2>"
        "<table border=1 cellpadding=4><tr><th>metric</th><th>window</th><th>training test</th></tr>"
        f"{rows}</table></section>"
    )


def estimated_section(estimated: dict | None) -> str:
    """The estimated performance (CBPE, before labels) as an HTML section: the expected confusion
    matrix, the estimated AUC with its band and the realized AUC beside it, or why it is unavailable."""
    est = estimated or {}
    head = '<section id="estimated-performance" style="font-family:sans-serif;margin:1em">'
    if not est.get("available"):
        why = html.escape(str(est.get("message") or "not computed for this window"))
        return f"{head}<h2>Estimated performance (CBPE)</h2><p>unavailable: {why}</p></section>"
    cm = est["confusion_matrix"]
    band = est.get("auc_band") or [None, None]
    rows = [
        ("estimated AUC-ROC", _cell(est.get("auc_roc"))),
        ("band (3 sigma)", f"{_cell(band[0])} – {_cell(band[1])}"),
        ("realized AUC-ROC (labelled rows)", _cell(est.get("realized_auc"))),
        ("expected TP / FP / FN / TN", " / ".join(_cell(cm[k]) for k in ("tp", "fp", "fn", "tn"))),
        ("estimated precision", _cell(est.get("precision"))),
        ("estimated recall", _cell(est.get("recall"))),
        ("estimated F1", _cell(est.get("f1"))),
        ("estimated accuracy", _cell(est.get("accuracy"))),
    ]
    cal = est.get("calibration") or {}
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in rows)
    return (
        f"{head}<h2>Estimated performance (CBPE, {est['n']} unlabelled rows)</h2>"
        f"<p>isotonic calibration on the {html.escape(str(cal.get('source')))} ({cal.get('n')} rows); "
        "valid under covariate shift, not under concept drift.</p>"
        f"<table border=1 cellpadding=4>{body}</table></section>"
    )


def quality_section(quality: dict | None) -> str:
    """Data quality per feature (missing, out of range, unseen categories) as an HTML section."""
    q = quality or {}
    head = '<section id="data-quality" style="font-family:sans-serif;margin:1em">'
    if not q:
        return f"{head}<h2>Data quality</h2><p>not computed for this window</p></section>"
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(f['status'])}</td><td>{_cell(f['missing_rate'])}</td>"
        f"<td>{_cell(f['reference_missing_rate'])}</td><td>{_cell(f.get('out_of_range_rate'))}</td>"
        f"<td>{_cell(f.get('unseen_rate'))}</td><td>{html.escape('; '.join(f['problems']))}</td></tr>"
        for k, f in q["features"].items()
    )
    return (
        f"{head}<h2>Data quality: {html.escape(q['status'])} ({len(q['failed_features'])} feature(s) failing)</h2>"
        "<table border=1 cellpadding=4><tr><th>feature</th><th>status</th><th>missing</th><th>training missing</th>"
        f"<th>out of training range</th><th>unseen categories</th><th>problems</th></tr>{rows}</table>"
        f"{rejections_section(q.get('rejections'))}</section>"
    )


def rejections_section(rejections: dict | None) -> str:
    """The records the API and consumers rejected in the window, by reason and by field, as HTML."""
    r = rejections or {}
    if not r.get("available"):
        return "<h3>Rejected records</h3><p>not counted by this store</p>"
    if not r["total"]:
        return "<h3>Rejected records</h3><p>none in this window</p>"
    e = html.escape
    reasons = "".join(f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in r["by_reason"].items())
    fields = "".join(f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in r["by_field"].items())
    return (
        f'<h3 id="rejections">Rejected records: {e(r["status"])} ({r["total"]}, {r["rate"]:.1%} of the window)</h3>'
        f"<table border=1 cellpadding=4><tr><th>reason</th><th>records</th></tr>{reasons}</table>"
        + (f"<table border=1 cellpadding=4><tr><th>field</th><th>errors</th></tr>{fields}</table>" if fields else "")
    )


def attribution_section(attribution: dict | None) -> str:
    """Global attribution (mean |SHAP| per feature) of the window beside the training reference, as HTML."""
    a = attribution or {}
    head = '<section id="global-attribution" style="font-family:sans-serif;margin:1em">'
    if not a.get("available"):
        why = html.escape(str(a.get("message") or "not computed for this window"))
        return f"{head}<h2>Global attribution</h2><p>unavailable: {why}</p></section>"
    feats = sorted(a["features"].items(), key=lambda kv: kv[1]["rank_window"])
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_cell(f['window'])}</td><td>{_cell(f['reference'])}</td>"
        f"<td>{_cell(f['ratio'])}</td><td>{f['rank_window']}</td><td>{f['rank_reference']}</td>"
        f"<td>{'shifted' if k in a['shifted'] else ''}</td></tr>"
        for k, f in feats
    )
    return (
        f"{head}<h2>Global attribution: {len(a['shifted'])} feature(s) shifted</h2>"
        f"<p>{html.escape(a['units'])} on {a['n_window']} window rows and {a['n_reference']} training reference "
        f"rows (seeded samples); shifted: ratio outside [1/{a['ratio_limit']}, {a['ratio_limit']}] or rank moved "
        f"by {a['rank_limit']} or more.</p><table border=1 cellpadding=4><tr><th>feature</th><th>window</th>"
        f"<th>training</th><th>ratio</th><th>rank now</th><th>rank in training</th><th></th></tr>{rows}</table></section>"
    )


def report_attribution(settings, contract, run_id: str, window: pd.DataFrame, reference, explainer=None) -> dict:
    """`churnops.monitoring.attribution.global_attribution` of the window against the reference sample;
    {"available": False, "message"} when the model or the reference cannot give it."""
    try:
        ex = explainer if explainer is not None else load_explainer(run_id, settings)
        cols = contract.feature_names
        return global_attribution(ex, window[cols], reference.frame[cols], seed=settings.seed)
    except Exception as exc:  # the report is still useful without it
        log.warning("no global attribution for run %s: %s", run_id, exc)
        return {"available": False, "message": f"{type(exc).__name__}: {str(exc)[:300]}"}


def _cell(v) -> str:
    if v is None:
        return "–"
    return str(v) if isinstance(v, int) else format(float(v), ".4g")


def insert_section(path: Path, section: str) -> None:
    """Put `section` at the top of the body of the HTML file at `path`."""
    text = path.read_text()
    i = text.find("<body>")
    text = text[: i + 6] + section + text[i + 6 :] if i >= 0 else section + text
    path.write_text(text)


# ---- the report ----------------------------------------------------------------------------------------


def report_id(ts: float) -> str:
    return "report-" + datetime.fromtimestamp(ts, timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")[:-4] + "Z"


def headline(summary: dict) -> dict:
    """The numbers the index and the store keep."""
    d = summary.get("drift") or {}
    perf = (summary.get("performance") or {}).get("overall") or {}
    pred = d.get("prediction") or {}
    return {
        "status": summary["status"],
        "message": summary.get("message"),
        "n": summary.get("n", 0),
        "n_window": summary.get("n_window", 0),
        "n_labelled": (summary.get("performance") or {}).get("n", 0),
        "max_psi": d.get("max_psi"),
        "n_critical": d.get("n_critical"),
        "n_warn": d.get("n_warn"),
        "drifted_features": d.get("drifted_features", []),
        "drift_status": d.get("status"),
        "prediction_psi": pred.get("psi"),
        "prediction_status": pred.get("status"),
        "realized_auc": perf.get("auc_roc"),
        "realized_rmse": perf.get("rmse"),
        "estimated_auc": (summary.get("estimated_performance") or {}).get("auc_roc"),
        "quality_status": (summary.get("quality") or {}).get("status"),
        "attribution_shifted": (summary.get("attribution") or {}).get("shifted"),
        "rejected": (summary.get("rejections") or {}).get("total"),
        "rejection_rate": (summary.get("rejections") or {}).get("rate"),
        "model_versions": summary.get("model_versions", []),
        "model": summary.get("model"),
        "reference_run_id": summary.get("reference_run_id"),
    }


def build_report(
    store: MonitoringStore,
    settings,
    contract,
    window_hours: float | None = None,
    now: float | None = None,
    reference: Reference | None = None,
    out_dir: Path | None = None,
    evidently: bool = True,
    explainer=None,
) -> dict:
    """Build one report for the window ending `now`; returns the summary (also written as JSON).

    The numbers come from `churnops.monitoring.window.summarize` (computed afresh, then cached for
    the trigger and `/drift`); Evidently gets a seeded sample of at most `report_max_rows` rows.
    """
    t0 = time.perf_counter()
    settings = resolved(settings)  # the data set's model name (reports of several lines share the folder)
    hours = float(window_hours if window_hours is not None else settings.report_window_hours)
    w = summarize(store, settings, contract, hours, now, reference=reference, fresh=True)
    win, df = w.summary, w.frame
    now = win["window"]["end"]
    out = Path(out_dir) if out_dir else reports_dir(settings)
    out.mkdir(parents=True, exist_ok=True)
    rid = report_id(now) + ("" if contract.name == CHURN_CONTRACT else f"-{contract.name}")
    summary: dict = {
        "_id": rid,
        "id": rid,
        "model": settings.model_name,
        "dataset": contract.name,
        "ts": now,
        "created": datetime.fromtimestamp(now, timezone.utc).isoformat(),
        "window": dict(win["window"]),
        "files": {},
        "n_window": win["n"],
        "model_versions": list(win["model_versions"]),
        "rejections": win.get("rejections"),  # counted however few rows the window holds
    }
    if win["status"] == "insufficient_data":
        summary.update(status="insufficient_data", n=win["n"], message=win["message"])
    elif win.get("image") is not None:  # image monitoring hook: our own HTML section, no Evidently
        d = win["drift"]
        summary.update(
            reference_run_id=win["reference_run_id"],
            status="ok" if d["status"] == "ok" else f"drift_{d['status']}",
            n=win["n"],
            sampled=False,
            drift=d,
            image=win["image"],
            performance=win["performance"],
            message=f"image drift {d['status']}: {', '.join(d['drifted_features']) or 'no signal'}",
        )
        (out / f"{rid}.html").write_text(image_section_html(win, f"Image drift report {rid}"))
        summary["files"]["html"] = f"{rid}.html"
    else:
        d = win["drift"]
        sample = sample_rows(df, settings.report_max_rows, seed=settings.seed)
        summary.update(
            reference_run_id=win["reference_run_id"],
            status="ok" if d["status"] == "ok" else f"drift_{d['status']}",
            n=int(len(sample)),
            sampled=len(sample) < len(df),
            drift=d,
            performance=win["performance"],
            estimated_performance=win.get("estimated_performance"),
            quality=win.get("quality"),
            message=f"{d['n_critical']} critical, {d['n_warn']} warn feature(s)",
        )
        loaded_here = evidently and reference is None  # MLflow answers: the model can be fetched too
        if loaded_here:
            reference = load_reference(win["reference_run_id"], settings, contract)  # cached on disk and in memory
        if (explainer is not None or loaded_here) and reference is not None and reference.frame is not None:
            summary["attribution"] = report_attribution(
                settings, contract, win["reference_run_id"], df, reference, explainer
            )
        if evidently and reference.frame is not None:
            sizes = evidently_reports(
                reference.frame, sample, contract, reference.threshold, out / f"{rid}.html", out / f"{rid}-quality.html"
            )
            summary["files"]["html"] = f"{rid}.html"
            insert_section(
                out / f"{rid}.html",
                estimated_section(win.get("estimated_performance"))
                + quality_section(win.get("quality"))
                + (attribution_section(summary["attribution"]) if "attribution" in summary else ""),
            )
            if sizes["quality_bytes"]:
                summary["files"]["quality_html"] = f"{rid}-quality.html"
                insert_section(out / f"{rid}-quality.html", realized_section(win["performance"]))
                sizes["quality_bytes"] = (out / f"{rid}-quality.html").stat().st_size
            summary.update(sizes)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    summary["files"]["json"] = f"{rid}.json"
    summary["headline"] = headline(summary)
    summary = jsonable(summary)
    (out / f"{rid}.json").write_text(json.dumps(summary, indent=1))
    prune_reports(out, settings.report_keep)
    write_index(out)
    meta = {"_id": rid, "ts": now, "window_hours": hours, "files": summary["files"], **summary["headline"]}
    if summary.get("drift"):
        meta["features"] = {
            k: {"psi": v["psi"], "p_value": v["p_value"], "status": v["status"]}
            for k, v in summary["drift"]["features"].items()
        }
    store.save_report(jsonable(meta))
    log.info("report %s: %s (n=%s, %.1f s)", rid, summary["status"], summary.get("n"), summary["seconds"])
    return summary


def prune_reports(out: Path, keep: int) -> list[str]:
    """Delete the files of all but the newest `keep` reports."""
    if keep <= 0:
        return []
    summaries = sorted(out.glob("report-*.json"), key=lambda p: p.name, reverse=True)
    removed = []
    for p in summaries[keep:]:
        stem = p.stem
        for f in (out / f"{stem}.html", out / f"{stem}-quality.html", p):
            if f.exists():
                f.unlink()
        removed.append(stem)
    return removed
