"""The training reference of a model run: `reference_sample.csv` (+ threshold) from MLflow.

Downloaded once per run into `<state_dir>/reference-cache/<run_id>/` (outside the served
reports directory) and prepared as a `drift.Reference`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pandas as pd

from reporting.drift import Reference

log = logging.getLogger(__name__)

REFERENCE_FILE, THRESHOLD_FILE = "reference_sample.csv", "threshold.json"


class ReferenceUnavailable(RuntimeError):
    """No model run is known or its reference sample cannot be fetched."""


def read_reference_csv(path: Path, contract) -> pd.DataFrame:
    """Reference sample with contract dtypes (categoricals as object, missing as None)."""
    dtypes = {n: (object if f.kind != "numeric" else "float64") for n, f in contract.features.items()}
    df = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=[""])
    for n, f in contract.features.items():
        if f.kind != "numeric" and n in df:
            df[n] = df[n].astype(object).where(df[n].notna(), None)
    return df


def served_run_id(settings, model_run_ids: list[str] | None = None) -> str:
    """The run to compare with: the most logged run in the window, else RUN_ID, else the champion."""
    ids = [r for r in (model_run_ids or []) if r]
    if ids:
        return Counter(ids).most_common(1)[0][0]
    if settings.run_id:
        return settings.run_id
    if settings.model_uri and settings.model_uri.startswith("runs:/"):
        return settings.model_uri.split("/")[1]
    from churnops.registry import alias_version

    mv = alias_version(settings.model_name, "champion", settings)
    if mv is None:
        raise ReferenceUnavailable(
            f"no logged predictions, no RUN_ID and no {settings.model_name}@champion at "
            f"{settings.mlflow_tracking_uri}: train and pin a model first (make train && make pin)")
    return mv.run_id


def fetch_run_files(run_id: str, settings, cache_root: Path | None = None) -> Path:
    """Download the reference sample and threshold of `run_id` (cached) and return the folder."""
    import mlflow.artifacts

    folder = (cache_root or settings.state_dir / "reference-cache") / run_id
    if (folder / REFERENCE_FILE).exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    try:
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=REFERENCE_FILE, dst_path=str(folder),
                                            tracking_uri=settings.mlflow_tracking_uri)
    except Exception as exc:
        raise ReferenceUnavailable(
            f"cannot download {REFERENCE_FILE} of run {run_id} from {settings.mlflow_tracking_uri}: {exc}") from exc
    try:
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=THRESHOLD_FILE, dst_path=str(folder),
                                            tracking_uri=settings.mlflow_tracking_uri)
    except Exception:  # optional: decisions then use 0.5
        log.warning("run %s has no %s; reference decisions use 0.5", run_id, THRESHOLD_FILE)
    return folder


def load_reference(run_id: str, settings, contract, cache_root: Path | None = None) -> Reference:
    folder = fetch_run_files(run_id, settings, cache_root)
    return reference_from_folder(folder, contract, run_id)


_MEMO: dict[tuple, Reference] = {}


def _build(folder: Path, contract, run_id: str) -> Reference:
    frame = read_reference_csv(folder / REFERENCE_FILE, contract)
    ref = Reference.from_frame(frame, contract, run_id=run_id)
    th = folder / THRESHOLD_FILE
    ref.threshold = float(json.loads(th.read_text())["threshold"]) if th.exists() else 0.5
    return ref


def reference_from_folder(folder: Path, contract, run_id: str | None = None) -> Reference:
    """Prepared reference from a folder holding reference_sample.csv (+ threshold.json); memoised."""
    folder = Path(folder)
    p = folder / REFERENCE_FILE
    if not p.exists():
        raise ReferenceUnavailable(f"{p} not found")
    key = (str(folder.resolve()), p.stat().st_mtime_ns, contract.fingerprint(), run_id or folder.name)
    if key not in _MEMO:
        if len(_MEMO) >= 8:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = _build(folder, contract, run_id or folder.name)
    return _MEMO[key]
