"""A compiled evaluator for XGBoost tree ensembles: the batch runtime of the servers.

XGBoost's own CPU predictor takes about 9 µs per row for the demo model (454 trees of depth 6)
and was half of a batch request's cost. This module lays each tree out as a complete binary tree
of the ensemble's depth (a leaf above that depth is copied down, under splits whose two sides
lead to the same value) and evaluates blocks of rows level by level in a numba kernel: no
branches on the data, and the rows of a block are independent, so the CPU overlaps them. Missing
values follow each split's default direction through two copies of the block, one with NaN as
-inf and one with NaN as +inf; a split reads the copy that sends NaN its way. On 1,000 real rows
it takes about 5 µs per row and agrees with XGBoost to about 2e-7.

Only what it can reproduce exactly is compiled: `gbtree` boosters with numeric splits, one
output and a logistic objective (XGBoost compares `value < threshold` in float32, as here).
`Forest.from_booster` returns None for anything else, and also when numba is not installed or
the result disagrees with XGBoost on a check matrix built from the model's own thresholds; the
caller then keeps XGBoost's predictor.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

MAX_DEPTH = 12          # 4,096 leaves per tree once padded; deeper ensembles stay on XGBoost
BLOCK_ROWS = 64         # rows evaluated together per tree (measured best among 32-256)
CHECK_TOLERANCE = 1e-5  # largest probability difference from XGBoost accepted at load
_OBJECTIVES = ("binary:logistic", "reg:logistic")

_kernel = None


def _compile():
    """The numba kernel, compiled once per process (about 1 s; cached on disk where possible)."""
    global _kernel
    if _kernel is not None:
        return _kernel
    import numba

    def predict_margin(X, rowsel, thr, leaf, depth, base, out):  # pragma: no cover - compiled
        n, F = X.shape
        T, inner = rowsel.shape
        acc = np.empty(64, np.float64)
        idx = np.empty(64, np.int32)
        xb = np.empty((2 * F, 64), np.float32)
        for r0 in range(0, n, 64):
            m = min(r0 + 64, n) - r0
            for r in range(m):
                acc[r] = base
                for f in range(F):
                    v = X[r0 + r, f]
                    if v != v:  # NaN: -inf goes left at every split, +inf right
                        xb[f, r] = -np.inf
                        xb[F + f, r] = np.inf
                    else:
                        xb[f, r] = v
                        xb[F + f, r] = v
            for t in range(T):
                rs = rowsel[t]
                th = thr[t]
                s0 = rs[0]
                t0 = th[0]
                for r in range(m):
                    idx[r] = 2 - np.int32(xb[s0, r] < t0)
                for _ in range(depth - 1):
                    for r in range(m):
                        i = idx[r]
                        idx[r] = 2 * i + 2 - np.int32(xb[rs[i], r] < th[i])
                lf = leaf[t]
                for r in range(m):
                    acc[r] += lf[idx[r] - inner]
            for r in range(m):
                out[r0 + r] = acc[r]
        return out

    assert BLOCK_ROWS == 64  # the kernel's literal block size
    try:
        kernel = numba.njit(nogil=True, cache=True)(predict_margin)
    except Exception:  # no writable cache folder: compile per process
        kernel = numba.njit(nogil=True)(predict_margin)
    _kernel = kernel
    return kernel


@dataclass
class Forest:
    """Padded trees: per tree, per inner node in breadth-first order, which row of the NaN-doubled
    block to read (feature, or feature + n_features where NaN goes right) and the threshold; the
    leaves left to right; and the base margin."""

    rowsel: np.ndarray   # int32 [trees, 2**depth - 1]
    thresholds: np.ndarray  # float32 [trees, 2**depth - 1]
    leaves: np.ndarray   # float32 [trees, 2**depth]
    depth: int
    base_margin: float
    n_features: int

    # ---- building -------------------------------------------------------------------------------
    @classmethod
    def from_model_json(cls, model: dict) -> "Forest | None":
        """Lay out an XGBoost JSON model (`Booster.save_raw("json")`); None when not supported."""
        learner = model["learner"]
        objective = learner.get("objective", {}).get("name")
        gb = learner["gradient_booster"]
        params = learner["learner_model_param"]
        if objective not in _OBJECTIVES or gb.get("name") != "gbtree":
            return None
        if int(params.get("num_class", "0")) > 1 or int(params.get("num_target", "1")) != 1:
            return None
        trees = gb["model"]["trees"]
        if not trees:
            return None
        for t in trees:
            if any(t.get("split_type", [])) or int(t["tree_param"].get("size_leaf_vector", "1")) > 1:
                return None  # categorical splits or vector leaves
        depth = max(1, max(_depth(t) for t in trees))
        if depth > MAX_DEPTH:
            return None
        n_features = int(params["num_feature"])
        inner, width = 2 ** depth - 1, 2 ** depth
        rowsel = np.zeros((len(trees), inner), np.int32)
        thr = np.zeros((len(trees), inner), np.float32)
        leaves = np.zeros((len(trees), width), np.float32)
        for k, t in enumerate(trees):
            _lay_out(t, depth, rowsel[k], thr[k], leaves[k], n_features)
        p = float(str(params["base_score"]).strip("[]"))
        if not 0.0 < p < 1.0:
            return None
        return cls(rowsel, thr, leaves, depth, math.log(p / (1.0 - p)), n_features)

    @classmethod
    def from_booster(cls, booster, check: bool = True) -> "Forest | None":
        """A checked `Forest` for an `xgboost.Booster`, or None (keep XGBoost's predictor)."""
        try:
            import numba  # noqa: F401
        except ImportError:
            return None
        try:
            forest = cls.from_model_json(json.loads(bytes(booster.save_raw("json"))))
            if forest is None:
                return None
            if check:
                X = forest.check_matrix()
                diff = float(np.max(np.abs(forest.predict(X) - booster.inplace_predict(X))))
                if not diff <= CHECK_TOLERANCE:
                    log.warning("compiled trees disagree with XGBoost by %.3g; using XGBoost's predictor", diff)
                    return None
            return forest
        except Exception as exc:  # never worse than XGBoost itself
            log.warning("cannot compile the trees (%s: %s); using XGBoost's predictor", type(exc).__name__, exc)
            return None

    def check_matrix(self, rows: int = 512, seed: int = 0) -> np.ndarray:
        """Rows whose values sit on, just below and just above the model's own thresholds, with
        NaNs: every branch and every default direction gets taken."""
        rng = np.random.default_rng(seed)
        X = np.full((rows, self.n_features), np.nan, np.float32)
        feats = self.rowsel % self.n_features
        for f in range(self.n_features):
            cuts = np.unique(self.thresholds[feats == f])
            if cuts.size == 0:
                X[:, f] = rng.normal(size=rows)
                continue
            pick = rng.choice(cuts, size=rows)
            X[:, f] = np.where(rng.random(rows) < 0.5, pick, np.nextafter(pick, np.float32(-np.inf)))
            X[:, f] += np.where(rng.random(rows) < 0.2, rng.normal(scale=np.abs(pick) + 1, size=rows), 0)
        X[rng.random(X.shape) < 0.1] = np.nan
        return X

    # ---- predicting -----------------------------------------------------------------------------
    def margin(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a matrix of {self.n_features} columns, got shape {X.shape}")
        out = np.empty(X.shape[0], np.float64)
        return _compile()(X, self.rowsel, self.thresholds, self.leaves, self.depth, self.base_margin, out)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Positive-class probabilities, float64."""
        m = self.margin(X)
        return 1.0 / (1.0 + np.exp(-m))


def _depth(tree: dict) -> int:
    left, right = tree["left_children"], tree["right_children"]
    best, stack = 0, [(0, 0)]
    while stack:
        nid, d = stack.pop()
        if left[nid] == -1:
            best = max(best, d)
        else:
            stack += [(left[nid], d + 1), (right[nid], d + 1)]
    return best


def _lay_out(tree: dict, depth: int, rowsel: np.ndarray, thr: np.ndarray, leaves: np.ndarray, n_features: int):
    """Fill one tree's padded arrays (breadth-first positions: children of p at 2p+1 and 2p+2)."""
    left, right = tree["left_children"], tree["right_children"]
    feat, cond, default_left = tree["split_indices"], tree["split_conditions"], tree["default_left"]
    inner = 2 ** depth - 1
    stack = [(0, 0, 0)]  # (node id, position, level)
    while stack:
        nid, pos, level = stack.pop()
        if level == depth:
            leaves[pos - inner] = cond[nid]  # a leaf's split_condition holds its value
            continue
        if left[nid] == -1:  # a leaf above the full depth: both sides lead to it
            rowsel[pos], thr[pos] = 0, 0.0
            stack += [(nid, 2 * pos + 1, level + 1), (nid, 2 * pos + 2, level + 1)]
            continue
        rowsel[pos] = int(feat[nid]) + (0 if default_left[nid] else n_features)
        thr[pos] = np.float32(cond[nid])
        stack += [(left[nid], 2 * pos + 1, level + 1), (right[nid], 2 * pos + 2, level + 1)]
