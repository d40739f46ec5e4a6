"""Image drift between two windows of logged image predictions (the summaries serving/image.py logs).

- per-channel Wasserstein-1 distance between the windows' per-image channel means (R, G, B of the
  model input): exposure and white-balance changes of the camera show here;
- an MMD two-sample test on the logged 16-number embedding projections: squared MMD with a
  Gaussian kernel (bandwidth: median pairwise distance of the pooled sample), p-value from
  `n_permutations` seeded label permutations, (1 + #{perm >= observed}) / (1 + n_permutations).

Windows are subsampled (seeded) to `max_rows` each: the kernel matrix is quadratic in rows.
Nothing here reads a store; pass the records (`find_predictions` answers) or the arrays.
"""

from __future__ import annotations

import numpy as np


class ImageDriftError(ValueError):
    """A window without the image summaries the test needs (names the window and field)."""


def channel_wasserstein(ref: np.ndarray, cur: np.ndarray) -> list[float]:
    """Wasserstein-1 distance per column of (N, C) reference and (M, C) current samples."""
    from scipy.stats import wasserstein_distance

    ref, cur = np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)
    if ref.ndim != 2 or cur.ndim != 2 or ref.shape[1] != cur.shape[1]:
        raise ImageDriftError(f"expected (N, C) and (M, C) samples, got {ref.shape} and {cur.shape}")
    return [float(wasserstein_distance(ref[:, j], cur[:, j])) for j in range(ref.shape[1])]


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d, 0.0)


def _mmd2(k: np.ndarray, n: int) -> float:
    """Unbiased squared MMD from the pooled kernel matrix (first n rows: sample X)."""
    m = k.shape[0] - n
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    )


def mmd_test(
    ref: np.ndarray, cur: np.ndarray, n_permutations: int = 200, seed: int = 0, bandwidth: float | None = None
) -> dict:
    """Squared MMD (Gaussian kernel) of two (N, D) / (M, D) samples with its permutation p-value."""
    x, y = np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ImageDriftError(f"expected (N, D) and (M, D) samples, got {x.shape} and {y.shape}")
    if len(x) < 2 or len(y) < 2:
        raise ImageDriftError(f"each window needs at least 2 rows, got {len(x)} and {len(y)}")
    z = np.vstack([x, y])
    d2 = _sq_dists(z, z)
    if bandwidth is None:
        off = d2[np.triu_indices(len(z), 1)]
        bandwidth = float(np.sqrt(np.median(off))) if off.size and np.median(off) > 0 else 1.0
    k = np.exp(-d2 / (2 * bandwidth**2))
    n = len(x)
    observed = _mmd2(k, n)
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(int(n_permutations)):
        p = rng.permutation(len(z))
        exceed += _mmd2(k[np.ix_(p, p)], n) >= observed
    return {
        "mmd2": observed,
        "p_value": (1 + exceed) / (1 + int(n_permutations)),
        "bandwidth": bandwidth,
        "n_permutations": int(n_permutations),
        "rows": [len(x), len(y)],
    }


def summaries(records: list[dict], window: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) channel means and (N, 16) embedding projections of logged image predictions."""
    means, emb = [], []
    for i, r in enumerate(records):
        f = r.get("features") or {}
        try:
            means.append([float(v) for v in f["channel_means"]])
            emb.append([float(v) for v in f["embedding"]["projection"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise ImageDriftError(
                f"{window} record {i} ({r.get('_id')}) has no image summary (features.channel_means and "
                f"features.embedding.projection): {type(exc).__name__}: {exc}"
            ) from exc
    return np.asarray(means, dtype=np.float64).reshape(-1, 3), np.asarray(emb, dtype=np.float64)


def image_drift(
    reference: list[dict],
    current: list[dict],
    n_permutations: int = 200,
    p_value: float = 0.05,
    max_rows: int = 500,
    seed: int = 0,
) -> dict:
    """Drift of `current` against `reference` (records as logged): channel Wasserstein + embedding MMD."""
    rm, re_ = summaries(reference, "reference")
    cm, ce = summaries(current, "current")
    rng = np.random.default_rng(seed)

    def sub(a: np.ndarray) -> np.ndarray:
        return a if len(a) <= max_rows else a[np.sort(rng.choice(len(a), max_rows, replace=False))]

    w = channel_wasserstein(rm, cm)
    mmd = mmd_test(sub(re_), sub(ce), n_permutations, seed)
    return {
        "channel_wasserstein": dict(zip(("r", "g", "b"), w)),
        "embedding_mmd": mmd,
        "drift": bool(mmd["p_value"] < p_value),
        "rows": {"reference": len(reference), "current": len(current)},
    }
