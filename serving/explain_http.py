"""`?explain=true` on `/predict` and `/predict/batch`: the query parameters and the answer's `explanation`.

`explain` takes true/false (also 1/0, yes/no; default false) and `top_k` an integer in 1..50
(default 3). A wrong value is a 422 naming the parameter; a model that cannot explain (the image
CNN, a bundle without XGBoost trees) a 422 naming why. Explanations are computed before anything is
logged, so a refused request leaves no trace in the prediction log. The numbers are
`churnops.explain`'s (exact tree SHAP per contract feature, in log-odds).
"""

from __future__ import annotations

from typing import Any, Mapping

from churnops.explain import (
    DEFAULT_TOP_K,
    MAX_TOP_K,
    CannotExplain,
    explain_columns,
    explain_records,
    explainer_for,
)
from serving.inference import BadInput, dumps

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def wants_explanation(args: Mapping[str, str]) -> int | None:
    """The `top_k` to explain with when `explain` is true, None when it is not asked for."""
    raw = args.get("explain")
    bad: dict[str, str] = {}
    on = False
    if raw is not None:
        v = raw.strip().lower()
        if v in TRUE:
            on = True
        elif v not in FALSE:
            bad["explain"] = f"expected true or false, got {raw[:40]!r}"
    k = DEFAULT_TOP_K
    if args.get("top_k") is not None:
        try:
            k = int(args["top_k"])
            if not 1 <= k <= MAX_TOP_K:
                raise ValueError
        except ValueError:
            bad["top_k"] = f"expected an integer in 1..{MAX_TOP_K}, got {str(args['top_k'])[:40]!r}"
    if bad:
        raise BadInput("invalid query parameter", bad, "invalid_query", 422)
    return k if on else None


def check_rows(n: int, limit: int) -> None:
    """A 413 naming EXPLAIN_MAX_ROWS when a batch asks for more explanations than it allows."""
    if n > limit:
        raise BadInput(
            "batch too large to explain",
            {"explain": f"{n} rows > EXPLAIN_MAX_ROWS {limit}: explain fewer rows per request, or ask without explain"},
            "batch_too_large",
            413,
        )


def cannot_explain(exc: CannotExplain) -> BadInput:
    return BadInput("this model cannot explain its predictions", {"explain": exc.reason}, "cannot_explain", 422)


def check_explainable(model) -> None:
    """A 422 naming why when `model` (a `serving.model.LoadedModel`) cannot explain (the image CNN)."""
    try:
        explainer_for(model.bundle)
    except CannotExplain as exc:
        raise cannot_explain(exc) from exc


def explain_one(model, values: dict, contract, top_k: int) -> dict:
    """The explanation of one validated row answered by `model` (a `serving.model.LoadedModel`)."""
    try:
        return explain_records(model.bundle, [values], contract, top_k)[0]
    except CannotExplain as exc:
        raise cannot_explain(exc) from exc


def explain_groups(groups: list[tuple], batch, contract, top_k: int) -> dict[int, bytes]:
    """{row position: JSON bytes of its explanation} for a routed batch (`serving.columnar.predict_columns`)."""
    out: dict[int, bytes] = {}
    for m, idx, _ in groups:
        cols = batch.columns if idx is None else batch.take(idx)
        n = batch.n if idx is None else len(idx)
        try:
            ex = explain_columns(m.bundle, cols, n, contract, top_k)
        except CannotExplain as exc:
            raise cannot_explain(exc) from exc
        positions = range(batch.n) if idx is None else idx.tolist()
        for i, e in zip(positions, ex):
            out[i] = dumps(e)
    return out


def with_explanation(item: bytes, explanation: Any) -> bytes:
    """A row's JSON object (bytes) with its `explanation` added."""
    raw = explanation if isinstance(explanation, bytes) else dumps(explanation)
    return item[:-1] + b',"explanation":' + raw + b"}"
