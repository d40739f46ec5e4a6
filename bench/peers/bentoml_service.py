"""BentoML service for `bench/bench_peers.py` (runs in bench/.venv-bentoml, not the project's venv).

    PEER_MODEL=/path/booster.json PEER_BATCHING=1 bentoml serve bentoml_service:Churn --port 3000

Two workers; `PEER_BATCHING=1` turns BentoML's adaptive batching on (`batchable=True`, batch
dimension 0; max_batch_size raised from 100 to 2,048 rows so a 1,000-row request fits one batch,
max_latency_ms left at its default); the
access log off, as ours. Input: the encoded float32 feature rows as JSON
(`{"rows": [[...], ...]}`); output: the positive-class probability per row.
"""

from __future__ import annotations

import os

import bentoml
import numpy as np
import xgboost as xgb

BATCHING = os.environ.get("PEER_BATCHING", "0") == "1"


@bentoml.service(
    workers=int(os.environ.get("PEER_WORKERS", "2")),
    logging={"access": {"enabled": False}},  # like ours: no line per request on stderr
)
class Churn:
    def __init__(self) -> None:
        self.booster = xgb.Booster()
        self.booster.load_model(os.environ["PEER_MODEL"])

    @bentoml.api(batchable=BATCHING, batch_dim=0, max_batch_size=2048)
    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Probabilities of the positive class for each encoded row."""
        return self.booster.inplace_predict(np.asarray(rows, dtype=np.float32))
