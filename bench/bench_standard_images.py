"""Standard images: the CNN on plain PNG/JPEG renders of the held-out scikit-learn digits.

Reproduces the finding of issue 24 item 4 and measures the fix. On the full raw digits (1,797 DNG
captures, the flow's split) it trains the CNN twice with the bench's configuration: as before
(raw captures only, `mix=0`) and with standard-image renders in the training mix (`mix`, default
0.5). Each model is scored on the DNG test split and on renders of the test split's digits (the
original 8x8 digits, upscaled to 32x32; `churnops.image.standard.STYLES`), each render decoded by
the server's own decoder (`serving.image.decode`), plus the issue's "x of 60" count (6 digits of
each class) for grey on black, black on white and the colour map. `bench/bench_image.py` calls
`standard_section` on the model the flow registers. Not a test: figures are measured.

    python bench/bench_standard_images.py [--mix 0.5] [--epochs 7] [--data <raw digits folder>]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "standard_images.json"
# the bench's configuration (bench/results/image.json best_params of a 4-trial sweep)
PARAMS = {"lr": 0.0077, "width": 8, "epochs": 7, "strength": 0.62}
ISSUE_STYLES = ("grey_on_black", "black_on_white", "colormap")


def held_out_strokes(files, idx_test: np.ndarray, size: tuple[int, int]) -> tuple[list[np.ndarray], np.ndarray]:
    """Stroke maps of the original scikit-learn digits behind the test split's captures (`<class>/<index>.dng`)."""
    from sklearn.datasets import load_digits

    from churnops.image.standard import digit_strokes

    digits = load_digits()
    index = [int(files[i].path.stem) for i in idx_test]
    return [digit_strokes(digits.images[j], size) for j in index], digits.target[index]


def server_inputs(strokes: list[np.ndarray], style, contract) -> np.ndarray:
    """(N, 3, H, W): each stroke map rendered in `style`, decoded by the server's decoder."""
    from churnops.image.standard import render
    from serving.image import decode

    return np.stack([decode(render(s, style), None, contract).x for s in strokes])


def standard_section(predict_proba, strokes: list[np.ndarray], y: np.ndarray, contract) -> dict:
    """{style: {accuracy, n, description}} over the held-out digits, and the issue's count of 60 per style."""
    from churnops.image.standard import STYLES

    out: dict = {"styles": {}, "of_60": {}}
    pick = np.concatenate([np.flatnonzero(y == c)[:6] for c in np.unique(y)])
    for name, style in STYLES.items():
        pred = predict_proba(server_inputs(strokes, style, contract)).argmax(1)
        out["styles"][name] = {
            "accuracy": round(float((pred == y).mean()), 4),
            "n": int(len(y)),
            "description": style.description,
        }
        if name in ISSUE_STYLES:
            out["of_60"][name] = f"{int((pred[pick] == y[pick]).sum())} of {len(pick)}"
    out["min_accuracy"] = min(v["accuracy"] for v in out["styles"].values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mix", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=PARAMS["epochs"])
    ap.add_argument("--width", type=int, default=PARAMS["width"])
    ap.add_argument(
        "--skip-before", action="store_true", help="train only the model with the mix (keeps the file's 'before')"
    )
    ap.add_argument("--data", default=None, help="a generated raw digits folder (default: generate one, seed 42)")
    a = ap.parse_args()
    from churnops.contract import load_any_contract
    from churnops.image import train
    from churnops.image.model import fit, predict_proba
    from churnops.image.sensor import generate
    from churnops.settings import Settings

    c = load_any_contract("raw_digits")
    s = Settings(_env_file=None, train_threads=min(2, os.cpu_count() or 1))
    root = Path(a.data) if a.data else Path(tempfile.mkdtemp(prefix="bench-std-")) / "raw"
    if not (root / ".complete").exists():
        generate(root, c, seed=s.seed)
        (root / ".complete").write_text("{}")
    d = train.prepare(root, c, s, synthetic=True)
    strokes, y_std = held_out_strokes(d.files, d.idx_test, (c.image.height, c.image.width))
    idx = np.concatenate([d.idx_train, d.idx_val])
    p = PARAMS | {"epochs": a.epochs, "width": a.width}
    result: dict = {"params": p, "images": len(d.files), "test_images": len(d.idx_test)}
    for label, mix in (("before", 0.0), ("after", a.mix)):
        if label == "before" and a.skip_before:
            continue
        t0 = time.perf_counter()
        net = fit(d.X[idx], d.y[idx], len(c.classes), p["width"], p["lr"], p["epochs"], p["strength"], s.seed,
                  train.torch_threads(s), mix=mix)  # fmt: skip
        fit_s = time.perf_counter() - t0
        proba = lambda X, net=net: predict_proba(net, X)  # noqa: E731
        dng = float((proba(d.X[d.idx_test]).argmax(1) == d.y[d.idx_test]).mean())
        result[label] = {"mix": mix, "fit_seconds": round(fit_s, 1), "dng_test_accuracy": round(dng, 4)}
        result[label] |= standard_section(proba, strokes, y_std, c)
        print(label, json.dumps(result[label], indent=1), flush=True)
    if a.skip_before and OUT.exists():  # keep the earlier run's "before" (e.g. measured on an older commit)
        result["before"] = json.loads(OUT.read_text()).get("before")
    OUT.write_text(json.dumps(result, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
