"""Global attribution of a window and its drift against the training reference.

The global attribution of a set of rows is, per contract feature, the mean |SHAP contribution| of the
model on those rows (`churnops.explain`: exact tree SHAP, one-hot groups summed, log-odds for a
classifier). The report computes it on a seeded sample of the window (`sample_rows`, default 500
rows: a few milliseconds of trees) and on the same number of rows of the training reference sample,
and compares the two per feature:

* `window`, `reference`   mean |contribution| in each
* `ratio`                 window / reference (> 1: the feature drives the predictions more than in training)
* `rank_window`, `rank_reference`, `rank_change` (rank 1 = the most important; positive change: it rose)

A feature whose ratio leaves [1/`ratio_limit`, `ratio_limit`] or whose rank moved by `rank_limit` or
more is listed in `shifted`: the model now decides on other grounds than in training, which the
feature drift statistics alone do not say.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from churnops.explain import CannotExplain, TreeExplainer, explainer_for

log = logging.getLogger(__name__)

SAMPLE_ROWS, RATIO_LIMIT, RANK_LIMIT = 500, 2.0, 3


def mean_abs_contributions(explainer: TreeExplainer, frame: pd.DataFrame, sample: int = SAMPLE_ROWS, seed: int = 0):
    """({feature: mean |contribution|}, rows used) of a clean frame, on a seeded sample of at most `sample` rows."""
    if len(frame) > sample:
        frame = frame.sample(sample, random_state=seed)
    if not len(frame):
        return {f: None for f in explainer.features}, 0
    X = explainer.encoder.transform_frame(frame)
    c = explainer.contributions(X)
    return {f: float(v) for f, v in zip(c.features, np.abs(c.values).mean(axis=0).tolist())}, len(frame)


def ranks(values: dict[str, float | None]) -> dict[str, int]:
    """Rank of each feature by value, 1 = largest (ties in the contract's order)."""
    order = sorted(values, key=lambda k: -(values[k] or 0.0))
    return {k: i + 1 for i, k in enumerate(order)}


def attribution_drift(
    window: dict[str, float | None],
    reference: dict[str, float | None],
    ratio_limit: float = RATIO_LIMIT,
    rank_limit: int = RANK_LIMIT,
) -> dict:
    """Per feature: both means, their ratio and both ranks (module docstring); `shifted`: those that moved."""
    rw, rr = ranks(window), ranks(reference)
    features, shifted = {}, []
    for f in window:
        w, r = window[f], reference.get(f)
        ratio = (w / r) if (w is not None and r) else None
        change = rr[f] - rw[f]
        features[f] = {
            "window": w,
            "reference": r,
            "ratio": ratio,
            "rank_window": rw[f],
            "rank_reference": rr[f],
            "rank_change": change,
        }
        if (ratio is not None and not (1 / ratio_limit <= ratio <= ratio_limit)) or abs(change) >= rank_limit:
            shifted.append(f)
    return {"features": features, "shifted": shifted, "ratio_limit": ratio_limit, "rank_limit": rank_limit}


def global_attribution(
    explainer: TreeExplainer,
    window: pd.DataFrame,
    reference: pd.DataFrame,
    sample: int = SAMPLE_ROWS,
    seed: int = 0,
) -> dict:
    """The window's global attribution, the reference's, and their drift (one JSON-able dict)."""
    w, n_w = mean_abs_contributions(explainer, window, sample, seed)
    r, n_r = mean_abs_contributions(explainer, reference, sample, seed)
    return {
        "available": True,
        "units": "mean |SHAP contribution| (log-odds for a classifier)",
        "n_window": n_w,
        "n_reference": n_r,
        **attribution_drift(w, r),
    }


def load_explainer(run_id: str, settings) -> TreeExplainer:
    """The explainer of the model of `run_id` (its bundle downloaded once into the reference cache)."""
    from churnops.bundle import Bundle
    from churnops.monitoring.reference import cache_folder

    folder = cache_folder(run_id, settings) / "model"
    if not (folder.exists() and any(folder.rglob("booster.json"))):
        import mlflow.artifacts

        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}-model.", dir=folder.parent))
        try:
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"runs:/{run_id}/model", dst_path=str(tmp), tracking_uri=settings.mlflow_tracking_uri
            )
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = sorted(p for p in folder.rglob("meta.json") if (p.parent / "booster.json").exists())
    if not meta:
        raise CannotExplain(f"the model of run {run_id} has no XGBoost bundle (booster.json)")
    return explainer_for(Bundle.load(meta[0].parent, prefer_onnx=False, threads=1))
