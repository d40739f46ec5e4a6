"""A batch in columns: rows validated one by one (the plain path) gathered per feature, and the
model called once per routed group. The column-wise validator is a fast path:
`churnops.speed.columnar`."""

from __future__ import annotations

import numpy as np

from churnops.speed.columnar import ColumnBatch
from churnops.validator import CompiledContract
from serving.inference import route_groups


def from_rows(rows: list, compiled: CompiledContract) -> ColumnBatch:
    """The row-by-row validation result (`serving.inference.Row`s) as a `ColumnBatch`."""
    columns: dict = {}
    renamed: dict = {}
    for r in rows:
        if r.renamed:
            renamed.update(r.renamed)
    for rule in compiled.rules:
        if rule.shape == "number":
            columns[rule.name] = np.array([r.values[rule.name] for r in rows], dtype=np.float64)
        else:
            columns[rule.name] = [r.values[rule.name] for r in rows]
    ignored = {i: r.ignored for i, r in enumerate(rows) if r.ignored}
    return ColumnBatch([r.request_id for r in rows], columns, ignored, renamed)


def predict_columns(models, batch: ColumnBatch) -> list[tuple]:
    """Route rows and predict, one matrix per model: [(model, row indices or None for all, probabilities)]."""
    out = []
    for m, idx in route_groups(models, batch.request_ids):
        if idx is None:
            X = m.bundle.encoder.transform_columns(batch.columns, batch.n)
        else:
            idx = np.array(idx, dtype=np.int64)
            X = m.bundle.encoder.transform_columns(batch.take(idx), len(idx))
        out.append((m, idx, m.bundle.predict_matrix(X)))
    return out
