"""The paired test behind the promotion rule `shadow_paired_test`: champion vs candidate on the SAME requests.

With shadow traffic on (serving/shadow.py) a mirrored request has two predictions in the prediction
log under one request id: the champion's answer (route `champion`) and the candidate's (route
`shadow`). `shadow_pairs` joins them with the feedback labels by request id; `paired_bootstrap_auc`
compares the two AUC-ROCs on those pairs with a seeded paired bootstrap: each resample draws request
ids with replacement and scores BOTH models on the same draw, so the difference's spread reflects
the pairing (the two models are judged on identical customers). Resamples holding one class only
cannot score an AUC and are skipped (counted in `resamples_used`).

* difference   candidate AUC minus champion AUC on all pairs (positive: the candidate is better)
* interval     the (1 - alpha) percentile interval of the resampled differences
* p            two-sided bootstrap p-value of "no difference": 2 * (1 + #resamples on the far side of 0)
               / (1 + resamples used), capped at 1

The candidate is significantly better at level alpha when the difference is positive, p < alpha and the
interval lies above zero (`significant`). Nothing here imports the registry or the servers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata

CHAMPION_ROUTE, SHADOW_ROUTE = "champion", "shadow"
DEFAULT_RESAMPLES, DEFAULT_ALPHA, DEFAULT_MIN_PAIRS = 2000, 0.05, 200


@dataclass(frozen=True)
class PairedSample:
    """Labelled request ids answered by both models: the label and each model's probability."""

    request_ids: list[str]
    y: np.ndarray
    champion: np.ndarray
    candidate: np.ndarray

    @property
    def n(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class PairedTest:
    """The evidence of one paired comparison (goes into the audit record and the approval form)."""

    method: str
    metric: str
    n: int
    n_positive: int
    champion: float
    candidate: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    alpha: float
    resamples: int
    resamples_used: int
    seed: int

    @property
    def significant(self) -> bool:
        """The candidate is better at level alpha: positive difference, p < alpha, interval above 0."""
        return self.difference > 0 and self.p_value < self.alpha and self.ci_low > 0

    def to_dict(self) -> dict:
        return asdict(self) | {"significant": self.significant}


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """AUC-ROC as the Mann-Whitney statistic (ties count one half); NaN with one class only."""
    y = np.asarray(y, dtype=bool)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def paired_bootstrap_auc(
    y,
    champion,
    candidate,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    alpha: float = DEFAULT_ALPHA,
) -> PairedTest:
    """Paired bootstrap of AUC(candidate) - AUC(champion) on the same labelled requests (module docstring).

    The resamples are `np.random.default_rng(seed).integers(0, n, size=(resamples, n))`, one row each.
    """
    y = np.asarray(y, dtype=float).astype(int)
    a = np.asarray(champion, dtype=float)
    b = np.asarray(candidate, dtype=float)
    if not (len(y) == len(a) == len(b)):
        raise ValueError(f"labels, champion and candidate differ in length: {len(y)}, {len(a)}, {len(b)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = len(y)
    base_a, base_b = auc(y, a), auc(y, b)
    diffs = np.full(resamples, np.nan)
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n)) if n else np.zeros((resamples, 0), int)
    for i in range(resamples):
        ix = draws[i]
        yi = y[ix]
        if 0 < yi.sum() < n:
            diffs[i] = auc(yi, b[ix]) - auc(yi, a[ix])
    used = diffs[np.isfinite(diffs)]
    if len(used):
        lo, hi = np.quantile(used, [alpha / 2, 1 - alpha / 2])
        far = min(int((used <= 0).sum()), int((used >= 0).sum()))
        p = min(1.0, 2.0 * (1 + far) / (1 + len(used)))
    else:
        lo = hi = p = float("nan")
    return PairedTest(
        method="paired bootstrap",
        metric="auc_roc",
        n=n,
        n_positive=int(y.sum()),
        champion=base_a,
        candidate=base_b,
        difference=base_b - base_a,
        ci_low=float(lo),
        ci_high=float(hi),
        p_value=float(p),
        alpha=float(alpha),
        resamples=int(resamples),
        resamples_used=int(len(used)),
        seed=int(seed),
    )


def shadow_pairs(
    store,
    candidate_version: str | None = None,
    start: float | None = None,
    end: float | None = None,
    champion_version: str | None = None,
) -> PairedSample:
    """Join the champion's and the candidate's (`route` shadow) predictions of the same request ids with
    their feedback labels. `candidate_version` / `champion_version` keep that model version's records
    only (None: any); a request id's newest record per route wins; requests without a label are left out."""
    champ: dict[str, tuple[float, float]] = {}
    shadow: dict[str, tuple[float, float]] = {}
    for r in store.find_predictions(start=start, end=end):
        route, rid, p = r.get("route"), r.get("request_id"), r.get("probability")
        if rid is None or p is None:
            continue
        version = None if r.get("model_version") is None else str(r.get("model_version"))
        if route == SHADOW_ROUTE and (candidate_version is None or version == str(candidate_version)):
            target = shadow
        elif route == CHAMPION_ROUTE and (champion_version is None or version == str(champion_version)):
            target = champ
        else:
            continue
        ts = float(r.get("ts") or 0.0)
        if rid not in target or target[rid][0] <= ts:
            target[rid] = (ts, float(p))
    both = sorted(set(champ) & set(shadow))
    labels: dict[str, tuple[float, float]] = {}
    if both:
        for f in store.find_feedback(request_ids=both):
            rid, ts = f["request_id"], float(f.get("ts") or 0.0)
            if rid not in labels or labels[rid][0] <= ts:
                labels[rid] = (ts, float(f["outcome"]))
    rids = [r for r in both if r in labels]
    return PairedSample(
        request_ids=rids,
        y=np.array([labels[r][1] for r in rids], dtype=float),
        champion=np.array([champ[r][1] for r in rids], dtype=float),
        candidate=np.array([shadow[r][1] for r in rids], dtype=float),
    )


def run_rule(config: dict, sample: PairedSample) -> dict:
    """The evidence of rule `shadow_paired_test` with `config` ({alpha, min_pairs, resamples, seed}) on
    `sample`: {"n", "min_pairs", "enough": bool, and when enough, the `PairedTest` fields}."""
    min_pairs = int(config.get("min_pairs", DEFAULT_MIN_PAIRS))
    out: dict = {"n": sample.n, "min_pairs": min_pairs, "enough": sample.n >= min_pairs}
    if sample.n and len(set(sample.y.astype(int).tolist())) < 2:
        out["enough"] = False
        out["why"] = "the labelled pairs hold one class only"
    if not out["enough"]:
        return out
    t = paired_bootstrap_auc(
        sample.y,
        sample.champion,
        sample.candidate,
        resamples=int(config.get("resamples", DEFAULT_RESAMPLES)),
        seed=int(config.get("seed", 0)),
        alpha=float(config.get("alpha", DEFAULT_ALPHA)),
    )
    return out | t.to_dict()
