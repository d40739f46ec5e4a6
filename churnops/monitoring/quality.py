"""Data quality of a monitoring window, per feature, against the training reference.

Per feature of the logged (clean) rows:

* `missing_rate` beside the reference's; it fails when it exceeds the reference's by more than
  `quality_missing_increase` and the contract's `max_null_fraction`
* numeric: `out_of_range_rate`, the share of values outside the reference's [min, max] (the
  contract's declared range is enforced at serving, where such a record is rejected); it fails
  above `quality_out_of_range_rate`
* categorical/ordinal: `unseen_categories`, values the reference never had (a category mapped to
  `unknown`, or one the contract lists but training never saw); it fails above `quality_unseen_rate`

Rejected records never reach the prediction log: the API and the consumers count them by reason and
field into the line's store (churnops/monitoring/rejections.py); the window's `rejections` (rate, by
reason, by field) is part of its quality, which fails when the rate exceeds `QUALITY_REJECTION_RATE`.
They are also counted in `churn_rejections_total{source, reason}` (each process's `/metrics`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnops.monitoring.drift import Reference

OK, FAIL = "ok", "fail"


def feature_quality(ref, col: pd.Series, spec, settings) -> dict:
    """Quality numbers and status of one feature column of the window."""
    n = len(col)
    out: dict = {"kind": ref.kind}
    ref_missing = float(ref.counts[-1] / max(ref.counts.sum(), 1))
    problems = []
    if ref.kind == "numeric":
        v = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
        missing = np.isnan(v)
        present = v[~missing]
        if ref.sorted_values is not None and len(ref.sorted_values):
            lo, hi = float(ref.sorted_values[0]), float(ref.sorted_values[-1])
            outside = int(((present < lo) | (present > hi)).sum())
            rate = outside / n if n else 0.0
            out.update(reference_min=lo, reference_max=hi, out_of_range=outside, out_of_range_rate=rate)
            if rate > settings.quality_out_of_range_rate:
                problems.append(
                    f"{rate:.1%} of values outside the training range [{lo:g}, {hi:g}] "
                    f"(> {settings.quality_out_of_range_rate:.1%})"
                )
    else:
        missing = col.isna().to_numpy()
        seen = {c for c, k in zip(ref.categories, ref.counts[:-1]) if k > 0}
        values = col[~missing].astype(str)
        unseen_mask = ~values.isin(seen)
        rate = float(unseen_mask.sum() / n) if n else 0.0
        out.update(unseen_categories=sorted(set(values[unseen_mask]))[:20], unseen_rate=rate)
        if rate > settings.quality_unseen_rate:
            problems.append(
                f"{rate:.1%} of values in categories training never saw {out['unseen_categories'][:5]} "
                f"(> {settings.quality_unseen_rate:.1%})"
            )
    missing_rate = float(missing.mean()) if n else 0.0
    allowed = max(ref_missing + settings.quality_missing_increase, float(getattr(spec, "max_null_fraction", 0.0)))
    out.update(missing_rate=missing_rate, reference_missing_rate=ref_missing)
    if missing_rate > allowed:
        problems.append(f"{missing_rate:.1%} missing (training {ref_missing:.1%}, allowed {allowed:.1%})")
    out["problems"] = problems
    out["status"] = FAIL if problems else OK
    return out


def data_quality(reference: Reference, df: pd.DataFrame, contract, settings, rejections: dict | None = None) -> dict:
    """Per-feature quality of the window and its overall status (`fail` when any feature fails, or
    when the window's `rejections` (`rejections.rejection_summary`) fail)."""
    features = {
        name: feature_quality(reference.features[name], df[name], spec, settings)
        for name, spec in contract.features.items()
        if name in reference.features and name in df
    }
    failed = sorted(k for k, f in features.items() if f["status"] == FAIL)
    rejected = bool(rejections and rejections.get("status") == FAIL)
    return {
        "status": FAIL if failed or rejected else OK,
        "n": int(len(df)),
        "failed_features": failed,
        "features": features,
        "rejections": rejections or {"available": False},
    }


def quality_reasons(quality: dict | None, settings) -> list[str]:
    """A data-quality failure as a retraining reason, when `retrain_on_quality_failure` is set."""
    if not settings.retrain_on_quality_failure or not quality or quality.get("status") != FAIL:
        return []
    reasons = []
    if quality["failed_features"]:
        parts = [f"{k}: {'; '.join(quality['features'][k]['problems'])}" for k in quality["failed_features"][:5]]
        reasons.append(f"data quality failed for {len(quality['failed_features'])} feature(s): " + " | ".join(parts))
    rejected = quality.get("rejections") or {}
    if rejected.get("status") == FAIL:
        reasons.append(f"data quality failed: {rejected['problem']}")
    return reasons
