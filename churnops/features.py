"""Feature encoding shared by training and serving: clean values -> float32 matrix.

Numeric features pass through as floats; ordinal features become their position in the
contract's ordered category list (missing -> NaN, which XGBoost routes by a learned default);
nominal categoricals become one-hot columns over the contract's categories (an unseen value ->
all zeros). The encoder is fully described by the contract, so it serialises to a small JSON
document that travels inside the model, and it has a pandas path for frames and a pure-Python
path for request records (no DataFrame on the request path).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from churnops.contract import DatasetContract


@dataclass(frozen=True)
class FeatureEncoder:
    """Column layout of the model input, derived from a contract."""

    numeric: tuple[str, ...]
    ordinal: tuple[tuple[str, tuple[str, ...]], ...]
    categorical: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def from_contract(cls, contract: DatasetContract) -> "FeatureEncoder":
        f = contract.features
        return cls(
            numeric=tuple(contract.numeric_features),
            ordinal=tuple((n, tuple(f[n].categories)) for n in contract.ordinal_features),
            categorical=tuple((n, tuple(f[n].categories)) for n in contract.categorical_features),
        )

    # ---- layout --------------------------------------------------------------------------------
    @property
    def input_features(self) -> list[str]:
        """Clean feature names the encoder reads."""
        return list(self.numeric) + [n for n, _ in self.ordinal] + [n for n, _ in self.categorical]

    @property
    def output_names(self) -> list[str]:
        """Names of the encoded columns (one-hot columns as `name=category`)."""
        return (
            list(self.numeric)
            + [n for n, _ in self.ordinal]
            + [f"{n}={c}" for n, cats in self.categorical for c in cats]
        )

    @property
    def width(self) -> int:
        return len(self.output_names)

    # ---- frames ---------------------------------------------------------------------------------
    def transform_frame(self, df) -> np.ndarray:
        """Encode a clean DataFrame into a float32 matrix."""
        n = len(df)
        out = np.zeros((n, self.width), dtype=np.float32)
        j = 0
        for name in self.numeric:
            out[:, j] = df[name].to_numpy(dtype=np.float64, na_value=np.nan)
            j += 1
        for name, cats in self.ordinal:
            codes = df[name].map({c: i for i, c in enumerate(cats)})
            out[:, j] = codes.to_numpy(dtype=np.float64, na_value=np.nan)
            j += 1
        for name, cats in self.categorical:
            values = df[name].to_numpy(dtype=object)
            for c in cats:
                out[:, j] = values == c
                j += 1
        return out

    # ---- records ----------------------------------------------------------------------------------
    def transform_records(self, records: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Encode validated records (dicts of clean values) without pandas."""
        rows = list(records)
        out = np.zeros((len(rows), self.width), dtype=np.float32)
        lookups = self._lookups()
        for i, rec in enumerate(rows):
            row = out[i]
            j = 0
            for name in self.numeric:
                v = rec.get(name)
                row[j] = math.nan if v is None else v
                j += 1
            for name, index in lookups["ordinal"]:
                code = index.get(rec.get(name))
                row[j] = math.nan if code is None else code
                j += 1
            for name, index, width in lookups["categorical"]:
                k = index.get(rec.get(name))
                if k is not None:
                    row[j + k] = 1.0
                j += width
        return out

    def transform_columns(self, columns: Mapping[str, Any], n: int) -> np.ndarray:
        """Encode validated columns (numeric: float arrays; categorical: lists of clean values)."""
        out = np.zeros((n, self.width), dtype=np.float32)
        lookups = self._lookups()
        j = 0
        for name in self.numeric:
            out[:, j] = columns[name]
            j += 1
        for name, index in lookups["ordinal"]:
            get = index.get
            out[:, j] = [get(v, math.nan) for v in columns[name]]
            j += 1
        rows = np.arange(n)
        for name, index, width in lookups["categorical"]:
            get = index.get
            k = np.array([get(v, -1) for v in columns[name]], dtype=np.int64)
            hit = k >= 0
            out[rows[hit], j + k[hit]] = 1.0
            j += width
        return out

    def _lookups(self) -> dict:
        cached = self.__dict__.get("_lookup_cache")
        if cached is None:
            cached = {
                "ordinal": [(n, {c: i for i, c in enumerate(cats)}) for n, cats in self.ordinal],
                "categorical": [(n, {c: i for i, c in enumerate(cats)}, len(cats)) for n, cats in self.categorical],
            }
            object.__setattr__(self, "_lookup_cache", cached)
        return cached

    # ---- persistence --------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(
            {
                "numeric": list(self.numeric),
                "ordinal": [[n, list(c)] for n, c in self.ordinal],
                "categorical": [[n, list(c)] for n, c in self.categorical],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> "FeatureEncoder":
        d = json.loads(text)
        return cls(
            numeric=tuple(d["numeric"]),
            ordinal=tuple((n, tuple(c)) for n, c in d["ordinal"]),
            categorical=tuple((n, tuple(c)) for n, c in d["categorical"]),
        )
