"""Run inside bench/.venv-nannyml (NannyML's own pins, apart from the project's): NannyML's CBPE on
the CSV bench_cbpe_nannyml.py writes; prints one JSON line per window. Not imported by the project.

    bench/.venv-nannyml/bin/python bench/nannyml_cbpe.py data.csv
"""

import json
import sys

import nannyml as nml
import pandas as pd


def main() -> None:
    df = pd.read_csv(sys.argv[1])
    ref = df[df["window"] == "reference"]
    est = nml.CBPE(
        y_pred_proba="score",
        y_pred="y_pred",
        y_true="y",
        metrics=["roc_auc"],
        chunk_number=1,
        problem_type="classification_binary",
    )
    est.fit(ref[["score", "y_pred", "y"]])
    out = {}
    for name, w in df[df["window"] != "reference"].groupby("window", sort=False):
        r = est.estimate(w[["score", "y_pred"]]).filter(period="analysis").to_df()
        out[name] = {
            "auc": float(r[("roc_auc", "value")].iloc[0]),
            "lower": float(r[("roc_auc", "lower_confidence_boundary")].iloc[0]),
            "upper": float(r[("roc_auc", "upper_confidence_boundary")].iloc[0]),
        }
    print(json.dumps({"nannyml": nml.__version__, "windows": out}))


if __name__ == "__main__":
    main()
