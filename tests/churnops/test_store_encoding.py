"""The one JSON encoder of log documents (churnops.store.encoding), used by the SQLite store and the spool."""

from __future__ import annotations

import numpy as np

from churnops.store.encoding import dump_document, load_document


def test_numpy_values_non_string_keys_and_huge_integers_round_trip():
    doc = {"p": np.float32(0.25), "x": np.arange(3)[::2], 7: "seven", "big": 2**70, "nan": float("nan")}
    raw = dump_document(doc)
    assert isinstance(raw, bytes)
    back = load_document(raw)
    assert back["p"] == 0.25 and back["x"] == [0, 2] and back["7"] == "seven" and back["big"] == 2**70
    assert back["nan"] != back["nan"] or back["nan"] is None  # the stdlib fallback keeps NaN, orjson writes null


def test_what_orjson_cannot_encode_becomes_its_text():
    class Odd:
        def __str__(self) -> str:
            return "odd!"

    assert load_document(dump_document({"o": Odd()})) == {"o": "odd!"}
