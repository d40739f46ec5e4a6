"""Real data sets that ship with installed packages, as raw CSV frames for `DATA=` or the flow.

`python -m churnops.datasets_bundled diabetes out.csv` writes scikit-learn's diabetes data
(442 rows, unscaled) as a CSV whose columns the `diabetes` contract names; with `DATASET=diabetes`
and no `DATA`, `churnops.sources.load_raw` reads the same frame directly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pandas as pd


def diabetes() -> pd.DataFrame:
    """scikit-learn's diabetes data (Efron et al. 2004), unscaled; column `target` = progression."""
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True, scaled=False).frame


BUNDLED: dict[str, Callable[[], pd.DataFrame]] = {"diabetes": diabetes}


def bundled_frame(dataset: str) -> pd.DataFrame | None:
    """The raw frame of a bundled data set (None when `dataset` is not one)."""
    make = BUNDLED.get(dataset)
    return make() if make else None


def main(argv: list[str] | None = None) -> int:
    """`python -m churnops.datasets_bundled NAME OUT.csv`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in BUNDLED:
        print(f"usage: python -m churnops.datasets_bundled {{{','.join(BUNDLED)}}} OUT.csv", file=sys.stderr)
        return 2
    out = Path(args[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = BUNDLED[args[0]]()
    frame.to_csv(out, index=False)
    print(f"wrote {len(frame)} rows of {args[0]} to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
