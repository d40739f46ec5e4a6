"""bench-loop, part 2: our CBPE (churnops.monitoring.estimated) against NannyML's CBPE on the same data.

Synthetic data with a known truth: x ~ N(mean, sd), P(y=1 | x) = sigmoid(1.5 x - 1.2), the model's
score sigmoid(3 x) (monotone, miscalibrated: both calibrate on the reference). Windows shift the
inputs (covariate shift: P(y | x) unchanged) or flip the concept (y from sigmoid(-1.5 x + 0.3)).
NannyML runs in its own venv, bench/.venv-nannyml (created on demand, gitignored: its pins are not
the project's). Writes bench/results/cbpe-nannyml.json: per window the realized AUC, ours and
NannyML's estimate and band, and the mean absolute differences.

    python bench/bench_cbpe_nannyml.py [--rows 5000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VENV = ROOT / "bench" / ".venv-nannyml"
NANNYML = ["nannyml==0.13.1", "statsmodels"]  # NannyML 0.13.1 imports statsmodels without requiring it

WINDOWS = {  # name: (mean, sd, concept flipped)
    "no shift": (0.0, 1.0, False),
    "shift +0.8, sd 0.6": (0.8, 0.6, False),
    "shift -0.5, sd 0.5": (-0.5, 0.5, False),
    "shift +1.2, sd 0.4": (1.2, 0.4, False),
    "concept drift": (0.0, 1.0, True),
}


def sample(n: int, mean: float, sd: float, concept: bool, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(mean, sd, n)
    z = -1.5 * x + 0.3 if concept else 1.5 * x - 1.2
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    score = 1 / (1 + np.exp(-3 * x))
    return pd.DataFrame({"score": score, "y_pred": (score >= 0.5).astype(int), "y": y})


def nannyml_python() -> Path:
    """bench/.venv-nannyml's python, creating the venv and installing NannyML the first time."""
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if subprocess.run([str(py), "-c", "import nannyml"], capture_output=True).returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *NANNYML], check=True)
    return py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000)
    a = ap.parse_args()
    from churnops.metrics import auc_roc
    from churnops.monitoring.estimated import Calibration, estimate_performance

    ref = sample(20_000, 0.0, 1.0, False, seed=1).assign(window="reference")
    cal = Calibration.fit(ref["score"], ref["y"], "synthetic reference")
    frames, rows = [ref], {}
    for i, (name, (mean, sd, concept)) in enumerate(WINDOWS.items()):
        w = sample(a.rows, mean, sd, concept, seed=10 + i).assign(window=name)
        frames.append(w)
        est = estimate_performance(w["score"].to_numpy(), cal, threshold=0.5, min_rows=100)
        rows[name] = {
            "realized_auc": auc_roc(w["y"], w["score"]),
            "ours": {"auc": est["auc_roc"], "band": est["auc_band"]},
        }
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.csv"
        pd.concat(frames).to_csv(data, index=False)
        run = subprocess.run(
            [str(nannyml_python()), str(ROOT / "bench" / "nannyml_cbpe.py"), str(data)],
            capture_output=True,
            text=True,
        )
    if run.returncode != 0:
        sys.exit(f"NannyML's CBPE failed in {VENV}:\n{run.stderr[-3000:]}")
    theirs = json.loads(run.stdout.strip().splitlines()[-1])
    for name, r in rows.items():
        n = theirs["windows"][name]
        r["nannyml"] = {"auc": n["auc"], "band": [n["lower"], n["upper"]]}
        r["ours_error"] = r["ours"]["auc"] - r["realized_auc"]
        r["nannyml_error"] = n["auc"] - r["realized_auc"]
        r["ours_minus_nannyml"] = r["ours"]["auc"] - n["auc"]
    cov = [r for k, r in rows.items() if not WINDOWS[k][2]]
    result = {
        "data": "synthetic: P(y|x)=sigmoid(1.5x-1.2), score sigmoid(3x); reference 20,000 rows",
        "rows_per_window": a.rows,
        "nannyml_version": theirs["nannyml"],
        "windows": rows,
        "covariate_mean_abs_error": {
            "ours": float(np.mean([abs(r["ours_error"]) for r in cov])),
            "nannyml": float(np.mean([abs(r["nannyml_error"]) for r in cov])),
        },
        "mean_abs_ours_minus_nannyml": float(np.mean([abs(r["ours_minus_nannyml"]) for r in rows.values()])),
    }
    sys.path.insert(0, str(ROOT / "bench"))
    from table import save  # bench/table.py: the one results table

    out = save("cbpe-nannyml", result)
    print(json.dumps(result["covariate_mean_abs_error"]), result["mean_abs_ours_minus_nannyml"], f"-> {out}")


if __name__ == "__main__":
    main()
