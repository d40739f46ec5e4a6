"""The prediction report: a window of the prediction log against the model's training reference.

`build_report` loads the window (predictions + feedback) from a `PredictionStore`, computes our
drift statistics and realized performance on every row, writes into the reports directory

* `<id>.html`          Evidently: data drift (features + prediction), data summary
* `<id>-quality.html`  Evidently: classification quality on the rows that have outcomes
* `<id>.json`          summary: window, n, drift per feature, prediction drift, performance

regenerates `index.html` and stores the headline in the store (`save_report`). Windows larger
than `report_max_rows` are sampled (seeded) for the Evidently report, which keeps a report
under 10 MB; our statistics and realized performance use every row. With fewer than
`report_min_rows` rows it records "not enough data" instead of failing.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from reporting import drift as drift_mod
from reporting.index import write_index
from reporting.performance import realized_performance

log = logging.getLogger(__name__)

META_COLUMNS = [
    "ts",
    "request_id",
    "source",
    "model_run_id",
    "model_version",
    "route",
    "probability",
    "decision",
    "latency_ms",
]
MIN_LABELLED_FOR_QUALITY = 20


def reports_dir(settings) -> Path:
    d = settings.state_path(settings.reports_dir, "reports")
    d.mkdir(parents=True, exist_ok=True)
    return d


def predictions_frame(records: list[dict], contract) -> pd.DataFrame:
    """Prediction log records -> one row per prediction: contract features + meta columns."""
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


def load_window(store, contract, start: float, end: float) -> pd.DataFrame:
    records = store.find_predictions(start=start, end=end)
    df = predictions_frame(records, contract)
    if len(df):
        df = attach_outcomes(df, store.find_feedback(start=start))
    else:
        df["outcome"] = pd.Series(dtype=float)
    return df


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
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset, DataDriftPreset, DataSummaryPreset

    cols = contract.feature_names + ["prediction"]
    dd = DataDefinition(
        numerical_columns=contract.numeric_features + ["prediction"],
        categorical_columns=contract.categorical_features + contract.ordinal_features,
    )
    cur = current.rename(columns={"probability": "prediction"})[cols]
    ref = reference[cols]
    snap = Report([DataDriftPreset(columns=cols), DataSummaryPreset(columns=cols)]).run(
        current_data=Dataset.from_pandas(cur, data_definition=dd),
        reference_data=Dataset.from_pandas(ref, data_definition=dd),
    )
    snap.save_html(str(html_path))
    out = {"html_bytes": html_path.stat().st_size, "quality_bytes": None}
    target = contract.target.name
    lab = current[current["outcome"].notna()]
    if (
        quality_path is not None
        and len(lab) >= MIN_LABELLED_FOR_QUALITY
        and lab["outcome"].nunique() == 2
        and target in reference
    ):
        ddq = DataDefinition(
            numerical_columns=["prediction"],
            categorical_columns=[target],
            classification=[BinaryClassification(target=target, prediction_probas="prediction")],
        )
        qcur = pd.DataFrame(
            {target: lab["outcome"].astype(int).to_numpy(), "prediction": lab["probability"].to_numpy()}
        )
        qref = pd.DataFrame(
            {target: reference[target].astype(int).to_numpy(), "prediction": reference["prediction"].to_numpy()}
        )
        q = Report([ClassificationPreset(probas_threshold=threshold)]).run(
            current_data=Dataset.from_pandas(qcur, data_definition=ddq),
            reference_data=Dataset.from_pandas(qref, data_definition=ddq),
        )
        q.save_html(str(quality_path))
        out["quality_bytes"] = quality_path.stat().st_size
    return out


# ---- the report ----------------------------------------------------------------------------------------


def report_id(ts: float) -> str:
    return "report-" + datetime.fromtimestamp(ts, timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")[:-4] + "Z"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return None if not np.isfinite(v) else v
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


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
        "model_versions": summary.get("model_versions", []),
        "reference_run_id": summary.get("reference_run_id"),
    }


def summarize_window(df: pd.DataFrame, reference: drift_mod.Reference, settings) -> tuple[dict, dict]:
    """Drift (every row) + realized performance (labelled rows)."""
    th = drift_mod.Thresholds.from_settings(settings)
    cur = df.rename(columns={"probability": "prediction"})
    d = drift_mod.compute_drift(reference, cur, th, min_critical_features=settings.retrain_min_critical_features)
    lab = df[df["outcome"].notna()]
    perf = realized_performance(lab)
    return d, perf


def build_report(
    store,
    settings,
    contract,
    window_hours: float | None = None,
    now: float | None = None,
    reference: drift_mod.Reference | None = None,
    out_dir: Path | None = None,
    evidently: bool = True,
) -> dict:
    """Build one report for the window ending `now`; returns the summary (also written as JSON)."""
    from reporting.reference import load_reference, served_run_id

    t0 = time.perf_counter()
    now = time.time() if now is None else now
    hours = float(window_hours if window_hours is not None else settings.report_window_hours)
    start = now - hours * 3600.0
    out = Path(out_dir) if out_dir else reports_dir(settings)
    out.mkdir(parents=True, exist_ok=True)
    rid = report_id(now)
    summary: dict = {
        "_id": rid,
        "id": rid,
        "ts": now,
        "created": datetime.fromtimestamp(now, timezone.utc).isoformat(),
        "window": {"start": start, "end": now, "hours": hours},
        "files": {},
    }
    df = load_window(store, contract, start, now)
    summary["n_window"] = int(len(df))
    summary["model_versions"] = sorted({str(v) for v in df["model_version"].dropna().unique()}) if len(df) else []
    if len(df) < settings.report_min_rows:
        summary.update(
            status="insufficient_data",
            n=int(len(df)),
            message=f"not enough data (n={len(df)} < min {settings.report_min_rows})",
        )
    else:
        if reference is None:
            run_id = served_run_id(settings, df["model_run_id"].dropna().astype(str).tolist())
            reference = load_reference(run_id, settings, contract)
        summary["reference_run_id"] = reference.run_id
        d, perf = summarize_window(df, reference, settings)
        sample = sample_rows(df, settings.report_max_rows, seed=settings.seed)
        summary.update(
            status="ok" if d["status"] == "ok" else f"drift_{d['status']}",
            n=int(len(sample)),
            sampled=len(sample) < len(df),
            drift=d,
            performance=perf,
            message=f"{d['n_critical']} critical, {d['n_warn']} warn feature(s)",
        )
        if evidently and reference.frame is not None:
            sizes = evidently_reports(
                reference.frame, sample, contract, reference.threshold, out / f"{rid}.html", out / f"{rid}-quality.html"
            )
            summary["files"]["html"] = f"{rid}.html"
            if sizes["quality_bytes"]:
                summary["files"]["quality_html"] = f"{rid}-quality.html"
            summary.update(sizes)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    summary["files"]["json"] = f"{rid}.json"
    summary["headline"] = headline(summary)
    summary = _jsonable(summary)
    (out / f"{rid}.json").write_text(json.dumps(summary, indent=1))
    prune_reports(out, settings.report_keep)
    write_index(out)
    meta = {"_id": rid, "ts": now, "window_hours": hours, "files": summary["files"], **summary["headline"]}
    if summary.get("drift"):
        meta["features"] = {
            k: {"psi": v["psi"], "p_value": v["p_value"], "status": v["status"]}
            for k, v in summary["drift"]["features"].items()
        }
    store.save_report(_jsonable(meta))
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
