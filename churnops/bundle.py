"""The model bundle: encoder + XGBoost booster + decision threshold (+ ONNX export) as ONE model.

On disk (and as the MLflow pyfunc model's artifacts) a bundle is a folder:

    encoder.json   feature layout derived from the data contract
    booster.json   XGBoost model (native JSON format)
    model.onnx     the booster as ONNX (float32 matrix in, probabilities out)
    meta.json      threshold, feature names, test metrics, lineage, onnx parity

Servers read the folder directly (onnxruntime on `model.onnx`, native booster as fallback);
`mlflow.pyfunc.load_model` gives the same predictions through `ChurnPyfunc`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from churnops.features import FeatureEncoder
from churnops.speed.forest import Forest
from churnops.tasks import task_for

ENCODER_FILE, BOOSTER_FILE, ONNX_FILE, META_FILE = "encoder.json", "booster.json", "model.onnx", "meta.json"


def export_onnx(classifier, width: int) -> bytes:
    """Convert a fitted XGBClassifier or XGBRegressor to ONNX (input `features`: float32 [N, width])."""
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    onx = convert_xgboost(classifier, initial_types=[("features", FloatTensorType([None, width]))], target_opset=15)
    return onx.SerializeToString()


def onnx_session(onnx_bytes: bytes, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_proba(session, X: np.ndarray, task=None) -> np.ndarray:
    """The model's output from an ONNX session: positive-class probabilities (handles dict or
    tensor outputs), or the predicted values of a regression `task` (churnops.tasks)."""
    outs = session.run(None, {"features": np.ascontiguousarray(X, dtype=np.float32)})
    return (task or task_for()).onnx_output(outs)


def onnx_parity(onnx_bytes: bytes, X: np.ndarray, native_proba: np.ndarray, task=None) -> float:
    """Disagreement between ONNX and the native model on X, as the task measures it: the max
    absolute probability difference (classifiers), the max relative value difference (regression)."""
    task = task or task_for()
    return task.parity(onnx_proba(onnx_session(onnx_bytes), X, task), native_proba)


@dataclass
class Bundle:
    """A loaded bundle: predict probabilities and decisions from clean records or matrices.

    With an ONNX session, matrices go through onnxruntime; with `native_min_rows > 0` the native
    booster is loaded too and takes matrices of at least that many rows (onnxruntime has the lower
    per-call cost, the trees' own evaluation the lower per-row cost on large batches; the training
    flow gates their agreement at 1e-4 and measures ~4e-7). With `compiled_trees`, the booster's
    matrices go through `churnops.speed.forest` (about 1.8x XGBoost's predictor on real rows, checked
    against it at load) when it supports the model.
    """

    encoder: Any
    threshold: float | None  # None: the task has no decision (regression)
    meta: dict = field(default_factory=dict)
    booster: Any = None
    session: Any = None
    native_min_rows: int = 0
    forest: Any = None
    booster_bytes: bytes | None = None  # booster.json when the trees are not loaded (explanations load it)
    explainer: Any = None  # churnops.explain.TreeExplainer, built on the first explanation

    @classmethod
    def load(
        cls,
        path: str | Path,
        prefer_onnx: bool = True,
        threads: int = 1,
        native_min_rows: int = 0,
        compiled_trees: bool = False,
    ) -> "Bundle":
        p = Path(path)
        meta = json.loads((p / META_FILE).read_text())
        enc = FeatureEncoder.from_json((p / ENCODER_FILE).read_text())
        threshold = meta.get("threshold")
        b = cls(encoder=enc, threshold=None if threshold is None else float(threshold), meta=meta)
        if prefer_onnx and (p / ONNX_FILE).exists():
            b.session = onnx_session((p / ONNX_FILE).read_bytes(), threads)
        if b.session is None or (native_min_rows > 0 and (p / BOOSTER_FILE).exists()):
            import xgboost as xgb

            b.booster = xgb.Booster()
            b.booster.load_model(str(p / BOOSTER_FILE))
            b.booster.set_param({"nthread": threads})
            b.native_min_rows = native_min_rows if b.session is not None else 0
            if compiled_trees and threads == 1:  # the kernel is single-threaded
                b.forest = Forest.from_booster(b.booster)
        elif (p / BOOSTER_FILE).exists():  # kept for explanations (churnops.explain): the folder may go
            b.booster_bytes = (p / BOOSTER_FILE).read_bytes()
        return b

    @cached_property
    def task(self):
        """What the model predicts (churnops.tasks; bundles written before `task` are classifiers)."""
        return task_for(self.meta.get("task", "binary_classification"))

    @property
    def runtime(self) -> str:
        """What answers a single row."""
        return "onnx" if self.session is not None else self._trees_runtime

    @property
    def batch_runtime(self) -> str:
        """What answers a matrix of `native_min_rows` rows or more."""
        return self._trees_runtime if self.session is None or self.native_min_rows > 0 else "onnx"

    @property
    def _trees_runtime(self) -> str:
        return "compiled-trees" if self.forest is not None else "xgboost"

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        if self.session is not None and not (0 < self.native_min_rows <= len(X)):
            return onnx_proba(self.session, X, self.task)
        if self.forest is not None:
            try:
                return self.forest.predict(X)
            except Exception:  # never worse than XGBoost: answer with its predictor from now on
                logging.getLogger(__name__).exception("compiled trees failed; using XGBoost's predictor")
                self.forest = None
        return np.asarray(self.booster.inplace_predict(np.ascontiguousarray(X, dtype=np.float32)), dtype=np.float64)

    def predict_records(self, records: list[dict]) -> np.ndarray:
        return self.predict_matrix(self.encoder.transform_records(records))


def write_bundle(
    path: str | Path, encoder, classifier, threshold: float | None, meta: dict, onnx_bytes: bytes | None
) -> Path:
    """Write the bundle folder (see module docstring)."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    (p / ENCODER_FILE).write_text(encoder.to_json())
    classifier.get_booster().save_model(str(p / BOOSTER_FILE))
    if onnx_bytes is not None:
        (p / ONNX_FILE).write_bytes(onnx_bytes)
    (p / META_FILE).write_text(
        json.dumps({**meta, "threshold": None if threshold is None else float(threshold)}, indent=1, default=str)
    )
    return p


class ChurnPyfunc(PythonModel):
    """MLflow pyfunc wrapper: clean-feature DataFrame in, probability + decision (or, for a
    regression, the predicted value) out."""

    def load_context(self, context):
        folder = Path(context.artifacts["bundle"])
        self.bundle = Bundle.load(folder, prefer_onnx=False, threads=0)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        # typed: mlflow warns about a `predict` without type hints (a DataFrame hint turns its
        # type-hint validation off; the logged signature describes the input)
        X = self.bundle.encoder.transform_frame(model_input)
        return self.bundle.task.pyfunc_output(self.bundle.predict_matrix(X), self.bundle.threshold)
