"""Per-prediction explanations: exact tree SHAP of the XGBoost booster, per ORIGINAL contract feature.

XGBoost computes exact tree SHAP values itself (`Booster.predict(DMatrix, pred_contribs=True)`):
one value per encoded column plus a last column, the bias (the expected margin). The encoder
(`churnops.features.FeatureEncoder`) turns a nominal feature into one-hot columns `name=category`;
SHAP values are additive, so the contribution of the contract feature is the sum over its columns.
For every row, the contributions plus the bias equal the model's margin exactly:

    sum(contributions) + bias == margin   (log-odds for a classifier; the predicted value for a regression)

Everything here is in margin units (log-odds of the positive class for a binary classifier), never in
probability: log-odds add up, probabilities do not. `explain_rows` adds the top k features by
absolute contribution in the words the contract gives (`label`, else the feature name) with a
direction (`raises` / `lowers` the churn probability).

A model that is not an XGBoost tree model (the image CNN, a bundle without `booster.json`) raises
`CannotExplain` naming why; the servers answer it with a 422.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

UNITS = {
    "binary_classification": "log-odds (margin) of the positive class",
    "regression": "the model's margin (predicted value)",
}
DEFAULT_TOP_K = 3
MAX_TOP_K = 50


class CannotExplain(ValueError):
    """This model cannot be explained with exact tree SHAP; `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Contributions:
    """SHAP values per contract feature (`values[i, j]`: row i, feature `features[j]`) and the bias per row."""

    features: tuple[str, ...]
    values: np.ndarray  # float64 [n, len(features)]
    bias: np.ndarray  # float64 [n]

    @property
    def margin(self) -> np.ndarray:
        """The model's margin per row: contributions plus bias."""
        return self.values.sum(axis=1) + self.bias


def feature_groups(encoder) -> tuple[tuple[str, ...], np.ndarray]:
    """(contract features in the encoder's order, the feature index of every encoded column)."""
    names: list[str] = []
    index: list[int] = []
    for name in encoder.numeric:
        index.append(len(names))
        names.append(name)
    for name, _ in encoder.ordinal:
        index.append(len(names))
        names.append(name)
    for name, cats in encoder.categorical:
        index.extend([len(names)] * len(cats))
        names.append(name)
    return tuple(names), np.asarray(index, dtype=np.int64)


class TreeExplainer:
    """Exact tree SHAP of an XGBoost booster, summed back to the encoder's contract features."""

    def __init__(self, booster, encoder, task: str = "binary_classification"):
        self.booster = booster
        self.encoder = encoder
        self.task = task
        self.features, self.column_feature = feature_groups(encoder)
        # one-hot columns -> contract features as one matrix product: [width, n_features] of 0/1
        self.fold = np.zeros((len(self.column_feature), len(self.features)), dtype=np.float64)
        self.fold[np.arange(len(self.column_feature)), self.column_feature] = 1.0
        self.lock = threading.Lock()  # one booster, several request threads

    def column_contributions(self, X: np.ndarray) -> np.ndarray:
        """XGBoost's own SHAP values per encoded column, the bias last: float64 [n, width + 1]."""
        import xgboost as xgb

        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.encoder.width:
            raise ValueError(f"expected a matrix of {self.encoder.width} encoded columns, got shape {X.shape}")
        dm = xgb.DMatrix(X, missing=np.nan, feature_names=self.booster.feature_names, nthread=1)
        with self.lock:
            out = self.booster.predict(dm, pred_contribs=True)
        return np.asarray(out, dtype=np.float64)

    def contributions(self, X: np.ndarray) -> Contributions:
        """SHAP values per contract feature (one-hot groups summed) and the bias, for each row of X."""
        cols = self.column_contributions(X)
        return Contributions(self.features, cols[:, :-1] @ self.fold, cols[:, -1].copy())


def direction(value: float) -> str:
    """`raises` / `lowers` / `no effect` for a contribution's sign."""
    return "raises" if value > 0 else "lowers" if value < 0 else "no effect"


def outcome_words(contract) -> str:
    """What a contribution moves, in the contract's words: `the churn probability` or `the predicted <target>`."""
    if contract is None:
        return "the prediction"
    target = contract.target.name.replace("_", " ")
    if getattr(contract, "task", "binary_classification") == "regression":
        return f"the predicted {target}"
    return f"the {target} probability"


def label_of(contract, name: str) -> str:
    """The contract's words for a feature (its `label`), else the feature name."""
    spec = contract.features.get(name) if contract is not None else None
    return (getattr(spec, "label", None) or name) if spec is not None else name


def explain_rows(
    explainer: TreeExplainer,
    X: np.ndarray,
    rows: Sequence[Mapping[str, Any]] | None = None,
    contract=None,
    top_k: int = DEFAULT_TOP_K,
) -> list[dict]:
    """One explanation per row of the encoded matrix X (`rows`: the clean values, shown in the top k).

    Each: `units`, `bias`, `margin`, `contributions` {feature: value} in the contract's feature
    order, and `top`: the `top_k` largest |contribution| as {feature, label, value, contribution,
    direction, text}.
    """
    c = explainer.contributions(X)
    what = outcome_words(contract)
    units = UNITS.get(explainer.task, "margin")
    labels = [label_of(contract, f) for f in c.features]
    k = max(0, min(int(top_k), len(c.features)))
    out = []
    for i in range(len(c.values)):
        v = c.values[i]
        order = np.argsort(-np.abs(v), kind="stable")[:k]
        row = rows[i] if rows is not None else {}
        top = []
        for j in order.tolist():
            name, val, contrib = c.features[j], row.get(c.features[j]), float(v[j])
            shown = "missing" if val is None or (isinstance(val, float) and val != val) else val
            top.append(
                {
                    "feature": name,
                    "label": labels[j],
                    "value": val,
                    "contribution": contrib,
                    "direction": direction(contrib),
                    "text": f"{labels[j]} ({shown}) {direction(contrib)} {what} by {abs(contrib):.3f} log-odds"
                    if explainer.task == "binary_classification"
                    else f"{labels[j]} ({shown}) {direction(contrib)} {what} by {abs(contrib):.3f}",
                }
            )
        out.append(
            {
                "units": units,
                "bias": float(c.bias[i]),
                "margin": float(c.bias[i] + v.sum()),
                "contributions": {f: float(x) for f, x in zip(c.features, v.tolist())},
                "top": top,
            }
        )
    return out


# ---- from a loaded model -------------------------------------------------------------------------------


def explainer_for(bundle) -> TreeExplainer:
    """The `TreeExplainer` of a loaded bundle (built once, kept on the bundle); `CannotExplain` when
    the model is not an XGBoost tree model over a contract's encoded features."""
    cached = getattr(bundle, "explainer", None)
    if isinstance(cached, TreeExplainer):
        return cached
    encoder = getattr(bundle, "encoder", None)
    if encoder is None or not hasattr(encoder, "categorical"):
        kind = type(bundle).__name__
        raise CannotExplain(
            f"this model ({kind}) is not a tree model over contract features (an image model is a CNN): "
            "exact tree SHAP explains XGBoost models only"
        )
    booster = getattr(bundle, "booster", None)
    if booster is None:
        raw = getattr(bundle, "booster_bytes", None)
        if not raw:
            raise CannotExplain(
                "this model has no XGBoost booster (booster.json) in its bundle: exact tree SHAP needs the trees"
            )
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        booster.set_param({"nthread": 1})
    task = (getattr(bundle, "meta", None) or {}).get("task", "binary_classification")
    ex = TreeExplainer(booster, encoder, task)
    try:
        bundle.explainer = ex
    except AttributeError:  # a bundle type without the slot: build it again next time
        pass
    return ex


def explain_records(
    bundle, records: Sequence[Mapping[str, Any]], contract=None, top_k: int = DEFAULT_TOP_K
) -> list[dict]:
    """Explanations of validated records (dicts of clean values) for a loaded bundle: the public entry
    point of the servers (`/predict?explain=true`, the Open Inference Protocol's `explanations` output).
    Raises `CannotExplain` for a model that cannot explain."""
    ex = explainer_for(bundle)
    return explain_rows(ex, ex.encoder.transform_records(records), records, contract, top_k)


def explain_columns(
    bundle, columns: Mapping[str, Any], n: int, contract=None, top_k: int = DEFAULT_TOP_K
) -> list[dict]:
    """Explanations of a validated batch in columns (`churnops.speed.columnar.ColumnBatch.columns`)."""
    ex = explainer_for(bundle)
    X = ex.encoder.transform_columns(columns, n)
    names = list(columns)
    rows = [{k: _plain(columns[k][i]) for k in names} for i in range(n)]
    return explain_rows(ex, X, rows, contract, top_k)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None
    return v
