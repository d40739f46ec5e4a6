"""Hyperopt TPE sweep over XGBoost, serial or on a Dask cluster.

The sweep asks TPE for a batch of suggestions (one for serial, one per worker for Dask),
evaluates the batch, tells TPE the losses, and repeats. With a batch of one this is exactly
what `hyperopt.fmin` does. Every finished trial is handed to `on_trial` (the flow logs it to
MLflow there), so the engine knows nothing about tracking.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from churnops.training import Split, fit_trial

log = logging.getLogger(__name__)


def search_space() -> dict:
    """The XGBoost space; number of trees is chosen by early stopping, not searched."""
    from hyperopt import hp
    from hyperopt.pyll import scope

    return {
        "learning_rate": hp.loguniform("learning_rate", math.log(0.02), math.log(0.3)),
        "max_depth": scope.int(hp.quniform("max_depth", 2, 10, 1)),
        "min_child_weight": hp.loguniform("min_child_weight", math.log(0.5), math.log(30)),
        "subsample": hp.uniform("subsample", 0.5, 1.0),
        "colsample_bytree": hp.uniform("colsample_bytree", 0.4, 1.0),
        "gamma": hp.loguniform("gamma", math.log(1e-3), math.log(5.0)),
        "reg_alpha": hp.loguniform("reg_alpha", math.log(1e-4), math.log(10.0)),
        "reg_lambda": hp.loguniform("reg_lambda", math.log(1e-2), math.log(50.0)),
        "scale_pos_weight": hp.uniform("scale_pos_weight", 1.0, 6.0),
    }


def normalise_params(params: dict) -> dict:
    """Plain Python types, ints where XGBoost wants ints."""
    out = {k: float(v) for k, v in params.items()}
    out["max_depth"] = int(round(out["max_depth"]))
    return out


@dataclass
class TrialResult:
    number: int
    params: dict
    metrics: dict
    n_trees: int
    fit_seconds: float
    val_proba: np.ndarray = field(repr=False)
    objective: float | None = None  # the task's loss (churnops.tasks); None: 1 - AUC-ROC

    @property
    def loss(self) -> float:
        return self.objective if self.objective is not None else 1.0 - self.metrics["auc_roc"]


@dataclass
class SweepConfig:
    n_trials: int = 50
    seed: int = 42
    max_trees: int = 2000
    early_stopping: int = 50
    threads: int = 0
    n_startup: int = 15
    executor: str = "local"  # "local" | "dask"
    dask_address: str | None = None
    dask_workers: int = 2
    task: Any = None  # churnops.tasks object: estimator, space, metrics, loss (None: binary classification)


def _evaluate(params: dict, data: Split, cfg: SweepConfig, threads: int) -> dict:
    return fit_trial(normalise_params(params), data, cfg.seed, cfg.max_trees, cfg.early_stopping, threads, cfg.task)


class _SerialEngine:
    """Trials one after another in this process."""

    slots = 1

    def __init__(self, data: Split, cfg: SweepConfig):
        self.data, self.cfg, self.done = data, cfg, []

    def submit(self, tid: int, params: dict) -> None:
        self.done.append((tid, _evaluate(params, self.data, self.cfg, self.cfg.threads)))

    def next_done(self) -> tuple[int, dict]:
        return self.done.pop(0)

    def close(self) -> None:
        pass


class _DaskEngine:
    """Trials on a Dask cluster: an existing scheduler (`dask_address`) or a local one.

    One trial per worker at a time (XGBoost single-threaded inside it); as soon as any trial
    finishes, its worker gets the next suggestion, so no worker waits for a slower neighbour.
    """

    def __init__(self, data: Split, cfg: SweepConfig):
        from dask.distributed import Client, LocalCluster

        self.cluster = None
        if cfg.dask_address:
            self.client = Client(cfg.dask_address)
        else:
            self.cluster = LocalCluster(
                n_workers=cfg.dask_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.WARNING,
            )
            self.client = Client(self.cluster)
        self.client.wait_for_workers(1 if cfg.dask_address else cfg.dask_workers, timeout=60)
        self.free = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        self.slots = max(1, len(self.free))
        self.cfg = cfg
        self.data_future = self.client.scatter(data, broadcast=True)
        self.pending: dict = {}  # future -> (trial id, worker)

    def submit(self, tid: int, params: dict) -> None:
        # pin the trial to a free worker: the scheduler would otherwise stack trials on one worker
        worker = self.free.pop(0)
        fut = self.client.submit(
            _evaluate, params, self.data_future, self.cfg, 1, pure=False, workers=[worker], allow_other_workers=True
        )
        self.pending[fut] = (tid, worker)

    def next_done(self) -> tuple[int, dict]:
        from dask.distributed import wait

        done = wait(list(self.pending), return_when="FIRST_COMPLETED").done
        fut = min(done, key=lambda f: self.pending[f][0])
        tid, worker = self.pending.pop(fut)
        self.free.append(worker)
        return tid, fut.result()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def run_sweep(
    data: Split, cfg: SweepConfig, on_trial: Callable[[TrialResult], None] | None = None
) -> list[TrialResult]:
    """Run `cfg.n_trials` TPE trials; return them in suggestion order.

    Serial runs are deterministic for a seed (exactly `hyperopt.fmin`'s sequence). On Dask the
    sequence depends on which trial finishes first, so it is not bit-reproducible.
    """
    from hyperopt import STATUS_OK, Trials, base, space_eval, tpe
    from hyperopt.base import JOB_STATE_DONE
    from hyperopt.utils import coarse_utcnow

    space = cfg.task.search_space() if cfg.task is not None else search_space()
    domain = base.Domain(lambda p: {"loss": 0.0, "status": STATUS_OK}, space)
    trials = Trials()
    rstate = np.random.default_rng(cfg.seed)
    algo = functools.partial(tpe.suggest, n_startup_jobs=min(cfg.n_startup, cfg.n_trials))
    engine = _DaskEngine(data, cfg) if cfg.executor == "dask" else _SerialEngine(data, cfg)
    results: list[TrialResult] = []
    in_flight: dict[int, tuple[dict, dict, int]] = {}  # tid -> (trial doc, params, number)
    submitted = 0
    try:
        while len(results) < cfg.n_trials:
            # fill every free slot; TPE suggests one point per call (pending points have no loss
            # yet, so they do not steer it; each call has its own seed)
            while len(in_flight) < engine.slots and submitted < cfg.n_trials:
                new_ids = trials.new_trial_ids(1)
                trials.refresh()
                docs = algo(new_ids, domain, trials, rstate.integers(2**31 - 1))
                trials.insert_trial_docs(docs)
                trials.refresh()
                doc = next(t for t in trials._dynamic_trials if t["tid"] == new_ids[0])
                params = space_eval(space, base.spec_from_misc(doc["misc"]))
                in_flight[new_ids[0]] = (doc, params, submitted)
                submitted += 1
                engine.submit(new_ids[0], params)
            tid, out = engine.next_done()
            doc, params, number = in_flight.pop(tid)
            tr = TrialResult(
                number=number,
                params=normalise_params(params),
                metrics=out["metrics"],
                n_trees=out["n_trees"],
                fit_seconds=out["fit_seconds"],
                val_proba=out["val_proba"],
                objective=out.get("loss"),
            )
            doc["state"] = JOB_STATE_DONE
            doc["result"] = {"loss": tr.loss, "status": STATUS_OK}
            doc["refresh_time"] = coarse_utcnow()
            trials.refresh()
            results.append(tr)
            if on_trial:
                on_trial(tr)
    finally:
        engine.close()
    return sorted(results, key=lambda r: r.number)


def best_trial(results: list[TrialResult]) -> TrialResult:
    """Lowest loss; ties go to the earlier trial (stable)."""
    return min(results, key=lambda r: (r.loss, r.number))
