"""Drift statistics, vectorised numpy: PSI, KS and chi-squared per feature, plus prediction drift.

A `Reference` is prepared once from the training reference sample (quantile bin edges for
numeric features, category frequencies for categorical/ordinal ones, the sorted values for KS),
then `compute_drift(reference, current)` compares a window against it.

Status per feature (thresholds from settings):

* ``critical``: PSI >= psi_critical **and** the test's p-value < drift_p_value
* ``warn``:     PSI >= psi_warn     **and** p < drift_p_value
* ``ok``:       otherwise

Requiring both an effect size (PSI) and significance (KS for numeric, chi-squared for
categorical) keeps small windows (noisy PSI) and very large windows (significant but tiny
shifts) from raising alerts.

Missing values are their own bin (numeric) or the category ``<missing>`` (categorical), so a
spike of missing values is seen by PSI and chi-squared. KS compares the non-missing values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

EPS = 1e-4  # floor for empty-bin proportions in PSI
MISSING = "<missing>"
OK, WARN, CRITICAL = "ok", "warn", "critical"
STATUS_CODE = {OK: 0, WARN: 1, CRITICAL: 2}


@dataclass
class Thresholds:
    psi_warn: float = 0.1
    psi_critical: float = 0.2
    p_value: float = 0.05

    @classmethod
    def from_settings(cls, s) -> "Thresholds":
        return cls(psi_warn=s.psi_warn, psi_critical=s.psi_critical, p_value=s.drift_p_value)


# ---- elementary statistics ---------------------------------------------------------------------------


def psi(ref_props: np.ndarray, cur_props: np.ndarray, eps: float = EPS) -> float:
    """Population stability index: sum((c - r) * ln(c / r)), proportions floored at `eps`."""
    r = np.maximum(np.asarray(ref_props, dtype=float), eps)
    c = np.maximum(np.asarray(cur_props, dtype=float), eps)
    return float(np.sum((c - r) * np.log(c / r)))


def quantile_edges(values: np.ndarray, bins: int = 10) -> np.ndarray:
    """Unique quantile edges of the non-missing reference values (first = min, last = max)."""
    v = values[~np.isnan(values)]
    if not len(v):
        return np.array([])
    return np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per quantile bin (outer bins open-ended) followed by the missing count."""
    nan = np.isnan(values)
    v = values[~nan]
    inner = edges[1:-1]
    k = max(len(edges) - 1, 1)
    idx = np.searchsorted(inner, v, side="right")
    return np.append(np.bincount(idx, minlength=k)[:k], nan.sum()).astype(float)


def sorted_bin_counts(cur_sorted: np.ndarray, edges: np.ndarray, missing: int) -> np.ndarray:
    """`bin_counts` for an already sorted NaN-free array: O(bins * log n)."""
    if not len(edges):
        return np.array([float(len(cur_sorted)), float(missing)])
    cuts = np.searchsorted(cur_sorted, edges[1:-1], side="left")
    counts = np.diff(np.concatenate([[0], cuts, [len(cur_sorted)]]))
    return np.append(counts, missing).astype(float)


def ks_statistic_sorted(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> float:
    """Two-sample KS statistic D from two sorted NaN-free arrays (ties handled exactly).

    Both ECDFs are right-continuous step functions, so sup|F1 - F2| is reached at a data point;
    we evaluate at the ends of tie groups of each sample (O(n) after sorting).
    """
    n1, n2 = len(ref_sorted), len(cur_sorted)
    if not n1 or not n2:
        return float("nan")
    d = 0.0
    for a, b, na, nb in ((ref_sorted, cur_sorted, n1, n2), (cur_sorted, ref_sorted, n2, n1)):
        last = np.ones(len(a), dtype=bool)
        last[:-1] = a[1:] != a[:-1]
        pts = a[last]
        fa = (np.flatnonzero(last) + 1) / na  # ECDF of a at its own tie-group ends
        fb = np.searchsorted(b, pts, side="right") / nb
        d = max(d, float(np.max(np.abs(fa - fb))))
    return d


def ks_pvalue(d: float, n1: int, n2: int) -> float:
    """Asymptotic p-value of a two-sample KS statistic: ``scipy.stats.ks_2samp(..., method="asymp")``."""
    from scipy import stats

    if np.isnan(d) or not n1 or not n2:
        return float("nan")
    en = n1 * n2 / (n1 + n2)
    return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def chi2_pvalue(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Chi-squared test of homogeneity on a 2 x K table (columns empty in both dropped).

    Same value as ``scipy.stats.chi2_contingency(table, correction=False)``.
    """
    from scipy import stats

    table = np.vstack([ref_counts, cur_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    return chi2, float(stats.chi2.sf(chi2, dof))


# ---- reference + comparison ---------------------------------------------------------------------------


@dataclass
class FeatureRef:
    name: str
    kind: str  # numeric | categorical | ordinal
    edges: np.ndarray | None = None  # numeric: quantile edges
    sorted_values: np.ndarray | None = None  # numeric: sorted non-missing values (KS)
    categories: list[str] = field(default_factory=list)
    counts: np.ndarray | None = None  # bins (+ missing) or categories (+ missing)
    n: int = 0

    @property
    def props(self) -> np.ndarray:
        return self.counts / max(self.counts.sum(), 1)


@dataclass
class Reference:
    """Everything the statistics need from the training reference, prepared once."""

    features: dict[str, FeatureRef]
    prediction: FeatureRef | None = None
    target_rate: float | None = None
    run_id: str | None = None
    frame: pd.DataFrame | None = None  # the reference sample (Evidently report)
    threshold: float = 0.5  # decision threshold of the model run
    test_metrics: dict | None = None  # the model run's test metrics (evaluation.json), when known
    calibration: object | None = None  # estimated.Calibration: reference probabilities vs labels (CBPE)

    @classmethod
    def from_frame(
        cls, ref: pd.DataFrame, contract, prediction_col: str = "prediction", bins: int = 10, run_id: str | None = None
    ) -> "Reference":
        feats = {}
        for name, spec in contract.features.items():
            feats[name] = _feature_ref(
                name, spec.kind, ref[name], bins, spec.categories if spec.kind != "numeric" else None
            )
        pred = None
        if prediction_col in ref:
            pred = _feature_ref("prediction", "numeric", ref[prediction_col], bins)
        target = contract.target.name
        rate = float(ref[target].mean()) if target in ref else None
        return cls(features=feats, prediction=pred, target_rate=rate, run_id=run_id, frame=ref)


def _cat_codes(col: pd.Series, categories: list[str]) -> np.ndarray:
    """Category index per value; len(categories) for missing (known categories must be listed)."""
    codes = pd.Categorical(col, categories=categories).codes  # missing or unseen -> -1
    codes = np.where(codes < 0, len(categories), codes)  # ... -> the missing bucket
    return codes


def _feature_ref(name: str, kind: str, col: pd.Series, bins: int, categories: list[str] | None = None) -> FeatureRef:
    if kind == "numeric":
        v = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
        edges = quantile_edges(v, bins)
        srt = np.sort(v[~np.isnan(v)])
        return FeatureRef(name, kind, edges=edges, sorted_values=srt, counts=bin_counts(v, edges), n=len(v))
    seen = [str(x) for x in pd.unique(col.dropna().astype(str))]
    cats = list(categories or [])
    cats += sorted(c for c in seen if c not in cats)
    codes = _cat_codes(col, cats)
    return FeatureRef(
        name, kind, categories=cats, counts=np.bincount(codes, minlength=len(cats) + 1).astype(float), n=len(col)
    )


def _status(psi_value: float, p_value: float, th: Thresholds) -> str:
    if np.isnan(psi_value):
        return OK
    significant = not np.isnan(p_value) and p_value < th.p_value
    if psi_value >= th.psi_critical and significant:
        return CRITICAL
    if psi_value >= th.psi_warn and significant:
        return WARN
    return OK


def compare_feature(ref: FeatureRef, cur: pd.Series | np.ndarray, th: Thresholds) -> dict:
    """PSI + test p-value + status of one feature of the current window."""
    if ref.kind == "numeric":
        v = cur.to_numpy(dtype=float, na_value=np.nan) if isinstance(cur, pd.Series) else np.asarray(cur, dtype=float)
        present = np.sort(v[~np.isnan(v)])  # one sort serves both the bins and KS
        counts = sorted_bin_counts(present, ref.edges, len(v) - len(present))
        keep = (ref.counts + counts) > 0  # the missing bin only when seen somewhere
        p_value_psi = psi(ref.props[keep], (counts / max(counts.sum(), 1))[keep])
        d = ks_statistic_sorted(ref.sorted_values, present)
        p = ks_pvalue(d, len(ref.sorted_values), len(present))
        out = {
            "kind": "numeric",
            "psi": p_value_psi,
            "test": "ks",
            "statistic": d,
            "p_value": p,
            "null_fraction": float(np.isnan(v).mean()) if len(v) else 0.0,
            "mean": float(present.mean()) if len(present) else None,
            "reference_mean": float(ref.sorted_values.mean()) if len(ref.sorted_values) else None,
        }
    else:
        col = cur if isinstance(cur, pd.Series) else pd.Series(cur, dtype=object)
        codes = _cat_codes(col, ref.categories)
        counts = np.bincount(codes, minlength=len(ref.categories) + 1).astype(float)
        keep = (ref.counts + counts) > 0
        value = psi(ref.props[keep], (counts / max(counts.sum(), 1))[keep])
        chi2, p = chi2_pvalue(ref.counts, counts)
        out = {
            "kind": ref.kind,
            "psi": value,
            "test": "chi2",
            "statistic": chi2,
            "p_value": p,
            "null_fraction": float(counts[-1] / max(counts.sum(), 1)),
            "frequencies": {
                c: float(x) for c, x in zip(ref.categories + [MISSING], counts / max(counts.sum(), 1)) if x > 0
            },
        }
    out["status"] = _status(out["psi"], out["p_value"], th)
    return out


def compute_drift(
    reference: Reference,
    current: pd.DataFrame,
    th: Thresholds | None = None,
    prediction_col: str = "prediction",
    min_critical_features: int = 2,
) -> dict:
    """Per-feature drift of `current` against `reference`, prediction drift and verdicts."""
    th = th or Thresholds()
    features = {}
    for name, fref in reference.features.items():
        if name in current:
            features[name] = compare_feature(fref, current[name], th)
    pred = None
    if reference.prediction is not None and prediction_col in current:
        pred = compare_feature(reference.prediction, current[prediction_col], th)
    n_crit = sum(f["status"] == CRITICAL for f in features.values())
    n_warn = sum(f["status"] == WARN for f in features.values())
    overall = (
        CRITICAL
        if (n_crit >= min_critical_features or (pred and pred["status"] == CRITICAL))
        else (WARN if (n_crit or n_warn or (pred and pred["status"] == WARN)) else OK)
    )
    return {
        "n": int(len(current)),
        "thresholds": {"psi_warn": th.psi_warn, "psi_critical": th.psi_critical, "p_value": th.p_value},
        "features": features,
        "prediction": pred,
        "n_critical": n_crit,
        "n_warn": n_warn,
        "drifted_features": sorted(k for k, f in features.items() if f["status"] != OK),
        "critical_features": sorted(k for k, f in features.items() if f["status"] == CRITICAL),
        "max_psi": max((f["psi"] for f in features.values()), default=0.0),
        "status": overall,
    }
