"""Which task the servers serve: THE place the serving side dispatches on the contract's `task`.

The HTTP API, the model loader and the stream consumer ask `image_contract(settings)`: None means
the tabular contract of `DATASET` (the tabular code paths, unchanged); an `ImageContract` means
`DATASET` names an image_classification contract (e.g. `DATASET=raw_digits`): the image model is
loaded (serving/image.py), `POST /predict/image` and the stream's `image_uri` records are served,
and the tabular routes refuse with a 409 naming the image route.
"""

from __future__ import annotations

from functools import lru_cache

from churnops.contract import load_any_contract
from churnops.settings import Settings


@lru_cache(maxsize=8)
def _contract(dataset: str):
    return load_any_contract(dataset)


def image_contract(s: Settings):
    """The served `ImageContract` when DATASET names an image contract, else None (tabular)."""
    c = _contract(s.dataset)
    return c if getattr(c, "task", None) == "image_classification" else None
