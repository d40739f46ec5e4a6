"""The image sweep's training work on CPU and, where one is lent, on a GPU: same data, same trials.

    python bench/bench_image_gpu.py prepare            # here: raw digits -> ISP -> bench/gpu/digits.npz
    python bench/bench_image_gpu.py run --out F.json   # anywhere with torch: time the trials per device
    python bench/bench_image_gpu.py combine --gpu-json G.json --here-json H.json  # -> bench/results/image_gpu.json

`prepare` generates the 1,797 raw digits (DNG) and develops them through the contract's ISP, exactly
as the training flow does, and stores the model inputs with the flow's split. `run` trains the same
fixed list of trials (drawn from the sweep's space with a seeded generator, the bench-image defaults:
4 trials, epochs 4..8) on each device available and reports seconds and test accuracy per trial.
It needs only numpy and torch (and `churnops.image.model`), so it runs on a GPU machine without the
project's other dependencies. The project trains on CPU; the GPU figure is for comparison only.
`make bench-image` reads the JSON files this writes (bench/results/image_gpu.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "bench" / "gpu" / "digits.npz"


def prepare() -> None:
    """Generate and develop the raw digits here (rawpy, the ISP), save the inputs and the split."""
    import tempfile

    from churnops.contract import load_any_contract
    from churnops.image import train
    from churnops.image.sensor import generate
    from churnops.settings import Settings

    c = load_any_contract("raw_digits")
    s = Settings(_env_file=None)
    root = Path(tempfile.mkdtemp(prefix="digits-")) / "raw"
    generate(root, c, seed=s.seed)
    d = train.prepare(root, c, s, synthetic=True)
    DATA.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        DATA, X=d.X.astype(np.float32), y=d.y, train=d.idx_train, val=d.idx_val, test=d.idx_test, sha256=d.sha256
    )
    print(f"{len(d.y)} images -> {DATA} ({DATA.stat().st_size / 1e6:.1f} MB)")


def trials(n: int, seed: int, epochs: tuple[int, int]) -> list[dict]:
    """A fixed list of sweep points from the sweep's space (SweepSpace bounds), the same on every device."""
    rng = np.random.default_rng(seed)
    return [
        {
            "lr": float(np.exp(rng.uniform(np.log(1e-3), np.log(1e-2)))),
            "width": int(rng.choice([8, 12, 16])),
            "epochs": int(rng.integers(epochs[0], epochs[1] + 1)),
            "strength": float(rng.uniform(0.0, 1.0)),
        }
        for _ in range(n)
    ]


def run(out: Path, n_trials: int, devices: list[str]) -> None:
    import torch

    from churnops.image.model import fit, predict_proba

    z = np.load(DATA)
    X, y = z["X"], z["y"]
    fit_idx = np.concatenate([z["train"], z["val"]])
    Xf, yf, Xt, yt = X[fit_idx], y[fit_idx], X[z["test"]], y[z["test"]]
    points = trials(n_trials, 42, (4, 8))
    threads = os.cpu_count() or 1
    result: dict = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_threads": threads,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "images": {"fit": int(len(yf)), "test": int(len(yt)), "dataset_sha256": str(z["sha256"])},
        "trials": points,
        "devices": {},
    }
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            result["devices"][device] = {"error": "no CUDA device"}
            continue
        if device == "cuda":  # first CUDA call (context, kernels) is start-up, not training
            fit(Xf[:64], yf[:64], 10, 8, 1e-3, 1, 0.0, seed=0, device="cuda")
            torch.cuda.synchronize()
        rows = []
        for p in points:
            t0 = time.perf_counter()
            net = fit(
                Xf, yf, 10, p["width"], p["lr"], p["epochs"], p["strength"], seed=42, threads=threads, device=device
            )
            if device == "cuda":
                torch.cuda.synchronize()
            secs = time.perf_counter() - t0
            acc = float((predict_proba(net, Xt).argmax(1) == yt).mean())
            rows.append({**p, "seconds": round(secs, 2), "test_accuracy": round(acc, 4)})
            print(device, rows[-1], flush=True)
        result["devices"][device] = {
            "threads": threads if device == "cpu" else None,
            "seconds": round(sum(r["seconds"] for r in rows), 2),
            "per_trial": rows,
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {out}")


def combine(gpu_machine: Path, here: Path) -> None:
    """bench/results/image_gpu.json: the GPU machine's run (GPU and its CPU) beside this machine's CPU run."""
    from table import save

    save(
        "image_gpu",
        {
            "gpu_machine": json.loads(gpu_machine.read_text()),
            "this_machine": json.loads(here.read_text()),
            "note": "the same trials and data on each device; the project trains on CPU (torch CPU wheel)",
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["prepare", "run", "combine"])
    ap.add_argument("--gpu-json", type=Path, help="combine: the JSON `run` wrote on the GPU machine")
    ap.add_argument("--here-json", type=Path, help="combine: the JSON `run --devices cpu` wrote here")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "image_gpu.json")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--devices", default="cuda,cpu")
    a = ap.parse_args()
    if a.mode == "prepare":
        prepare()
    elif a.mode == "combine":
        combine(a.gpu_json, a.here_json)
    else:
        run(a.out, a.trials, a.devices.split(","))


if __name__ == "__main__":
    main()
