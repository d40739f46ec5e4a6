"""Image drift: per-channel Wasserstein on logged channel means, MMD permutation test on embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from churnops.image.drift import ImageDriftError, channel_wasserstein, image_drift, mmd_test


def test_channel_wasserstein_is_the_shift():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0.2, 0.6, size=(400, 3))
    cur = ref + np.array([0.1, 0.0, -0.05])  # exposure/white balance moved R up, B down
    assert channel_wasserstein(ref, ref) == [0.0, 0.0, 0.0]
    assert channel_wasserstein(ref, cur) == pytest.approx([0.1, 0.0, 0.05], abs=1e-12)
    with pytest.raises(ImageDriftError, match=r"\(400, 3\) and \(400, 2\)"):
        channel_wasserstein(ref, cur[:, :2])


def test_mmd_permutation_p_value():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(120, 16)), rng.normal(size=(120, 16))
    same = mmd_test(a, b, n_permutations=100, seed=3)
    moved = mmd_test(a, b + 0.5, n_permutations=100, seed=3)
    assert same["p_value"] > 0.05 and abs(same["mmd2"]) < moved["mmd2"]
    assert moved["p_value"] == pytest.approx(1 / 101)  # no permutation reaches a shift of 0.5 sd in 16 dims
    assert mmd_test(a, b, n_permutations=100, seed=3) == same  # seeded
    with pytest.raises(ImageDriftError, match="at least 2 rows"):
        mmd_test(a[:1], b)


def record(means, proj, i=0) -> dict:
    return {"_id": f"r{i}", "features": {"channel_means": list(means), "embedding": {"projection": list(proj)}}}


def test_image_drift_on_logged_records():
    rng = np.random.default_rng(11)
    ref = [record(rng.uniform(0.3, 0.5, 3), rng.normal(size=16), i) for i in range(150)]
    cur = [record(rng.uniform(0.3, 0.5, 3) + [0.2, 0, 0], rng.normal(size=16) + 1.0, i) for i in range(150)]
    out = image_drift(ref, cur, n_permutations=50, max_rows=100)
    assert out["drift"] and out["embedding_mmd"]["rows"] == [100, 100]
    assert out["channel_wasserstein"]["r"] == pytest.approx(0.2, abs=0.03)
    assert out["channel_wasserstein"]["g"] < 0.03
    calm = image_drift(ref[:75], ref[75:], n_permutations=50)
    assert not calm["drift"] and calm["embedding_mmd"]["p_value"] > 0.05
    with pytest.raises(ImageDriftError, match="current record 0 .* has no image summary"):
        image_drift(ref, [{"_id": "t", "features": {"customer_age": 40}}])
