"""ISP sensitivity: how the model's accuracy moves when the camera pipeline changes.

The test set's raw frames are re-developed with one ISP change at a time (other white balance,
other demosaic method, more sensor noise, other gamma, exposure +-1 stop) and classified again.
The table goes to MLflow (as a table, a CSV and a bar plot) and the contract's
`sensitivity_floor` turns rows into promotion rules. PNG/JPG files have no raw data and are
left out of the analysis.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from churnops.image.contract import ImageContract, IspSpec
from churnops.image.isp import RawFrame, process

Variation = Callable[[RawFrame, IspSpec, np.random.Generator], tuple[RawFrame, IspSpec]]


def _noise(fraction: float) -> Variation:
    """Extra Gaussian read noise of `fraction` of the sensor's range (DN), before the ISP."""

    def apply(f: RawFrame, spec: IspSpec, rng: np.random.Generator):
        sigma = fraction * (f.white - float(np.mean(f.black)))
        noisy = np.clip(np.rint(f.bayer + rng.normal(0.0, sigma, f.bayer.shape)), 0, 65535).astype(np.uint16)
        return replace(f, bayer=noisy), spec

    return apply


def _spec(**update) -> Variation:
    return lambda f, spec, rng: (f, spec.model_copy(update=update))


VARIATIONS: dict[str, tuple[str, Variation]] = {
    "baseline": ("the contract's ISP", lambda f, spec, rng: (f, spec)),
    "wb_gray_world": ("white balance from the frame's channel means", _spec(white_balance="gray_world")),
    "wb_warm_shift": (
        "camera white balance x (1.3, 1, 0.77): a warmer illuminant guess",
        lambda f, spec, rng: (replace(f, wb=f.wb * np.array([1.3, 1.0, 0.77], np.float32)), spec),
    ),
    "wb_none": ("no white balance", _spec(white_balance="none")),
    "demosaic_nearest": ("nearest-neighbour demosaic instead of bilinear", _spec(demosaic="nearest")),
    "noise_1pct": ("extra read noise, sigma 1% of the raw range", _noise(0.01)),
    "noise_3pct": ("extra read noise, sigma 3% of the raw range", _noise(0.03)),
    "gamma_1.8": ("gamma 1.8 instead of the contract's", _spec(gamma=1.8)),
    "gamma_2.8": ("gamma 2.8 instead of the contract's", _spec(gamma=2.8)),
    "exposure_plus_1": ("exposure +1 stop", _spec(exposure_stops=1.0)),
    "exposure_minus_1": ("exposure -1 stop", _spec(exposure_stops=-1.0)),
}


def develop(frames: list[RawFrame], spec: IspSpec, variation: Variation, seed: int) -> np.ndarray:
    """(N, 3, H, W) model inputs of the frames under one variation (seeded noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for f in frames:
        f2, s2 = variation(f, spec, rng)
        out.append(process(f2, s2).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def sensitivity(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    frames: list[RawFrame],
    labels: np.ndarray,
    contract: ImageContract,
    seed: int = 42,
):
    """DataFrame: variation, description, accuracy, delta (vs baseline), n."""
    rows = []
    for name, (desc, var) in VARIATIONS.items():
        acc = (
            float((predict_proba(develop(frames, contract.isp, var, seed)).argmax(1) == labels).mean())
            if frames
            else float("nan")
        )
        rows.append({"variation": name, "description": desc, "accuracy": acc, "n": len(frames)})
    table = pd.DataFrame(rows)
    table.insert(3, "delta", table["accuracy"] - table.loc[table["variation"] == "baseline", "accuracy"].iloc[0])
    return table


def plot(table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.barh(table["variation"][::-1], table["accuracy"][::-1], color="tab:blue")
    base = float(table.loc[table["variation"] == "baseline", "accuracy"].iloc[0])
    ax.axvline(base, color="grey", ls="--", lw=1)
    ax.set_xlim(0, 1), ax.set_xlabel("test accuracy"), ax.set_title("accuracy under ISP variations")
    fig.tight_layout(), fig.savefig(path, dpi=90), plt.close(fig)


def log_sensitivity(table, run_id: str, tracking_uri: str) -> None:
    """The table (MLflow table + CSV), the bar plot and one metric per variation on `run_id`."""
    import mlflow
    from mlflow.entities import Metric

    client = mlflow.MlflowClient(tracking_uri)
    client.log_table(run_id, table, "isp_sensitivity.json")
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / "isp_sensitivity.csv", index=False)
        plot(table, Path(tmp) / "isp_sensitivity.png")
        client.log_artifacts(run_id, tmp)
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[
            Metric(f"sens_{v}_accuracy", float(a), now, 0)
            for v, a in zip(table["variation"], table["accuracy"])
            if a == a
        ],
    )
