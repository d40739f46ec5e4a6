"""The training reference of a model run: `reference_sample.csv` (+ threshold, test metrics) from MLflow.

Downloaded once per run into `<state_dir>/reference-cache/<run_id>/` (outside the served
reports directory) and prepared as a `drift.Reference`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from churnops.model_line import resolved
from churnops.monitoring.drift import Reference
from churnops.monitoring.estimated import CALIBRATION_FILE, calibration_from_frames
from churnops.redact import redact
from churnops.registry import alias_version

log = logging.getLogger(__name__)

REFERENCE_FILE, THRESHOLD_FILE, EVALUATION_FILE = "reference_sample.csv", "threshold.json", "evaluation.json"
RUN_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")


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

    settings = resolved(settings)
    mv = alias_version(settings.model_name, "champion", settings)
    if mv is None:
        raise ReferenceUnavailable(
            f"no logged predictions, no RUN_ID and no {settings.model_name}@champion at "
            f"{redact(settings.mlflow_tracking_uri)}: train and pin a model first (make train && make pin)"
        )
    return mv.run_id


def local_run_id(settings, model_run_ids: list[str] | None = None) -> str | None:
    """`served_run_id` when it needs no MLflow call (logged runs, RUN_ID, MODEL_URI runs:/), else None."""
    ids = [r for r in (model_run_ids or []) if r]
    if ids or settings.run_id or (settings.model_uri and settings.model_uri.startswith("runs:/")):
        return served_run_id(settings, ids)
    return None


class ReferenceNotReady(ReferenceUnavailable):
    """The reference is being fetched in the background (or the last fetch failed); ask again later."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class BackgroundReferences:
    """References for a server: read from the local cache, fetched from MLflow only in a background thread.

    `get` never calls MLflow: it answers from `<state_dir>/reference-cache/<run_id>/` or starts
    (once at a time per run, at most every `retry_s` after a failure) a download thread and
    raises `ReferenceNotReady`.
    """

    CHAMPION = "@champion"

    def __init__(self, settings, contract, cache_root: Path | None = None, retry_s: float = 30.0):
        self.settings, self.contract, self.cache_root, self.retry_s = settings, contract, cache_root, retry_s
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}
        self._failed: dict[str, tuple[float, str]] = {}
        self._champion: str | None = None

    def get(self, model_run_ids: list[str] | None = None) -> Reference:
        run_id = local_run_id(self.settings, model_run_ids) or self._champion
        key = run_id or self.CHAMPION
        if run_id is not None:
            ref = self._cached(cache_folder(run_id, self.settings, self.cache_root), run_id)
            if ref is not None:
                return ref
        return self._not_ready(key)

    def _cached(self, folder: Path, run_id: str):
        """The prepared reference when its files are in `folder`, else None (image monitoring hook: overridden)."""
        return reference_from_folder(folder, self.contract, run_id) if (folder / REFERENCE_FILE).exists() else None

    def _download(self, run_id: str) -> None:
        """Fetch the reference files of `run_id` into the cache (image monitoring hook: overridden)."""
        fetch_run_files(run_id, self.settings, self.cache_root)

    def _not_ready(self, key: str) -> Reference:
        now = time.monotonic()
        with self._lock:
            failed = self._failed.get(key)
            busy = key in self._running
            if not busy and (failed is None or now - failed[0] >= self.retry_s):
                t = threading.Thread(target=self._fetch, args=(key,), name="reference-fetch", daemon=True)
                self._running[key] = t
                t.start()
                busy = True
        what = "the champion's reference" if key == self.CHAMPION else f"the reference of run {key}"
        if busy:
            raise ReferenceNotReady(f"{what} is being fetched from MLflow; try again shortly", 5)
        wait = max(1, int(self.retry_s - (now - failed[0])) + 1)
        raise ReferenceNotReady(f"{what} is not available: {failed[1]}", wait)

    def _fetch(self, key: str) -> None:
        try:
            run_id = key
            if key == self.CHAMPION:
                run_id = served_run_id(self.settings, [])
                self._champion = run_id
            self._download(run_id)
            with self._lock:
                self._failed.pop(key, None)
        except Exception as exc:
            reason = redact(f"{type(exc).__name__}: {exc}")[:400]
            log.warning("reference fetch for %s failed (next try in %.0f s): %s", key, self.retry_s, reason)
            with self._lock:
                self._failed[key] = (time.monotonic(), reason)
        finally:
            with self._lock:
                self._running.pop(key, None)


def cache_folder(run_id: str, settings, cache_root: Path | None = None) -> Path:
    """Where the reference files of `run_id` are kept once downloaded."""
    if not RUN_FOLDER.fullmatch(run_id or ""):
        raise ReferenceUnavailable(f"run id {str(run_id)[:60]!r} cannot name a reference folder")
    return (cache_root or settings.state_dir / "reference-cache") / run_id


def fetch_artifacts(
    run_id: str,
    settings,
    required: str,
    optional: tuple[tuple[str, int, str], ...] = (),
    cache_root: Path | None = None,
    hint: str = "",
) -> Path:
    """Download `required` and each of `optional` ((file, log level, what its absence means)) that
    exists of `run_id` into its cache folder, once; return the folder.

    The files land in a temporary folder renamed into place, so a reader never sees half a file.
    """
    import mlflow.artifacts

    folder = cache_folder(run_id, settings, cache_root)
    if (folder / required).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}.", dir=folder.parent))

    def get(name: str) -> None:
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=name, dst_path=str(tmp), tracking_uri=settings.mlflow_tracking_uri
        )

    try:
        try:
            get(required)
        except Exception as exc:
            raise ReferenceUnavailable(
                f"cannot download {required} of run {run_id} from {redact(settings.mlflow_tracking_uri)}: "
                f"{redact(exc)[:300]}{hint}"
            ) from exc
        for name, level, absent in optional:
            try:
                get(name)
            except Exception:
                log.log(level, "run %s has no %s; %s", run_id, name, absent)
        if not (folder / required).exists():
            shutil.rmtree(folder, ignore_errors=True)  # an incomplete folder of an older version
            try:
                os.replace(tmp, folder)
            except OSError:  # another process renamed its copy first
                if not (folder / required).exists():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def fetch_run_files(run_id: str, settings, cache_root: Path | None = None) -> Path:
    """Download the reference sample, threshold and test metrics of `run_id` (cached); the folder."""
    return fetch_artifacts(
        run_id,
        settings,
        REFERENCE_FILE,
        (
            (THRESHOLD_FILE, logging.INFO, "reference decisions use 0.5"),  # a regression has none
            (EVALUATION_FILE, logging.WARNING, "no training test metrics to compare with"),
            (CALIBRATION_FILE, logging.INFO, "the estimated performance calibrates on the reference sample"),
        ),
        cache_root,
    )


def load_reference(run_id: str, settings, contract, cache_root: Path | None = None) -> Reference:
    folder = fetch_run_files(run_id, settings, cache_root)
    return reference_from_folder(folder, contract, run_id)


_MEMO: dict[tuple, Reference] = {}


def _build(folder: Path, contract, run_id: str) -> Reference:
    frame = read_reference_csv(folder / REFERENCE_FILE, contract)
    ref = Reference.from_frame(frame, contract, run_id=run_id)
    th = folder / THRESHOLD_FILE
    ref.threshold = float(json.loads(th.read_text())["threshold"]) if th.exists() else 0.5
    ev = folder / EVALUATION_FILE
    if ev.exists():
        ref.test_metrics = dict(json.loads(ev.read_text()).get("metrics") or {})
    cal = folder / CALIBRATION_FILE
    try:
        ref.calibration = calibration_from_frames(
            pd.read_csv(cal) if cal.exists() else None, frame, contract.target.name
        )
    except (ValueError, KeyError) as exc:  # an unreadable file: the estimate says unavailable
        log.warning("run %s: no calibration for the estimated performance: %s", run_id, exc)
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
