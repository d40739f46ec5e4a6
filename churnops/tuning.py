"""Hyperopt TPE sweep over XGBoost, serial or on a Dask cluster.

The sweep asks TPE for one suggestion per free slot (one for serial, one per worker for Dask),
evaluates, tells TPE each loss as its trial finishes, and repeats. With one slot this is exactly
what `hyperopt.fmin` does (a test compares the two sequences). hyperopt's own parallel paths need
MongoDB or Spark, so the Dask loop is ours; it uses hyperopt's public `Trials` calls only
(`new_trial_ids`, `insert_trial_docs`, `refresh`, `trials`) and records a finished trial the way
`fmin` does (state, result and refresh time on the trial's document); the pinned hyperopt range
in pyproject.toml and tests/churnops/test_tuning.py fail loudly if that changes. Every finished
trial is handed to `on_trial` (the flow logs it to MLflow there), so the loop knows nothing about
tracking.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

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
    task: Any = None  # churnops.tasks object: estimator, space, metrics, loss (the caller passes it in: required)


def _evaluate(params: dict, data: Split, cfg: SweepConfig, threads: int) -> dict:
    return fit_trial(normalise_params(params), data, cfg.seed, cfg.max_trees, cfg.early_stopping, threads, cfg.task)


class SerialEngine:
    """Trials one after another in this process: `evaluate(params)` is the trial's output."""

    slots = 1

    def __init__(self, evaluate: Callable[[dict], dict]):
        self.evaluate, self.done = evaluate, []

    def submit(self, tid: int, params: dict) -> None:
        self.done.append((tid, self.evaluate(params)))

    def next_done(self) -> tuple[int, dict]:
        return self.done.pop(0)

    def close(self) -> None:
        pass


class DaskEngine:
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


def tpe_trials(
    engine, n_trials: int, seed: int, n_startup: int, space: dict, loss: Callable[[dict], float]
) -> Iterator[tuple[int, dict, dict]]:
    """TPE over `space` on `engine` (`slots`, `submit(tid, params)`, `next_done() -> (tid, out)`):
    yields `(number, params, out)` as trials finish, `number` counting suggestions from 0; the
    trial's loss is `loss(out)`."""
    from hyperopt import STATUS_OK, Trials, base, space_eval, tpe
    from hyperopt.base import JOB_STATE_DONE
    from hyperopt.utils import coarse_utcnow

    domain = base.Domain(lambda p: {"loss": 0.0, "status": STATUS_OK}, space)
    trials = Trials()
    rstate = np.random.default_rng(seed)  # as fmin: one draw per suggestion
    algo = functools.partial(tpe.suggest, n_startup_jobs=min(n_startup, n_trials))
    in_flight: dict[int, tuple[dict, int]] = {}  # tid -> (params, number)
    submitted = finished = 0
    while finished < n_trials:
        # fill every free slot; a pending trial counts for TPE as a trial with infinite loss
        while len(in_flight) < engine.slots and submitted < n_trials:
            tid = trials.new_trial_ids(1)
            trials.refresh()
            trials.insert_trial_docs(algo(tid, domain, trials, rstate.integers(2**31 - 1)))
            trials.refresh()
            stored = next(d for d in trials.trials if d["tid"] == tid[0])  # as fmin evaluates it
            params = space_eval(space, base.spec_from_misc(stored["misc"]))
            in_flight[tid[0]] = (params, submitted)
            submitted += 1
            engine.submit(tid[0], params)
        tid, out = engine.next_done()
        params, number = in_flight.pop(tid)
        doc = next(d for d in trials.trials if d["tid"] == tid)  # the stored document, as fmin does
        doc["state"] = JOB_STATE_DONE
        doc["result"] = {"loss": loss(out), "status": STATUS_OK}
        doc["refresh_time"] = coarse_utcnow()
        trials.refresh()
        finished += 1
        yield number, params, out


def trial_loss(out: dict) -> float:
    """What TPE minimises: the task's loss (`churnops.tasks`), else 1 - validation AUC-ROC."""
    loss = out.get("loss")
    return float(loss) if loss is not None else 1.0 - out["metrics"]["auc_roc"]


def run_sweep(
    data: Split, cfg: SweepConfig, on_trial: Callable[[TrialResult], None] | None = None
) -> list[TrialResult]:
    """Run `cfg.n_trials` TPE trials; return them in suggestion order.

    Serial runs are deterministic for a seed (exactly `hyperopt.fmin`'s sequence). On Dask the
    sequence depends on which trial finishes first, so it is not bit-reproducible.
    """
    if cfg.executor == "dask":
        engine = DaskEngine(data, cfg)
    else:
        engine = SerialEngine(lambda params: _evaluate(params, data, cfg, cfg.threads))
    if cfg.task is None:
        raise ValueError("SweepConfig.task is required: the contract's task (churnops.tasks.task_for(contract))")
    space = cfg.task.search_space()
    results: list[TrialResult] = []
    try:
        for number, params, out in tpe_trials(engine, cfg.n_trials, cfg.seed, cfg.n_startup, space, trial_loss):
            tr = TrialResult(
                number=number,
                params=normalise_params(params),
                metrics=out["metrics"],
                n_trees=out["n_trees"],
                fit_seconds=out["fit_seconds"],
                val_proba=out["val_proba"],
                objective=out.get("loss"),
            )
            results.append(tr)
            if on_trial:
                on_trial(tr)
    finally:
        engine.close()
    return sorted(results, key=lambda r: r.number)


def best_trial(results: list[TrialResult]) -> TrialResult:
    """Lowest loss; ties go to the earlier trial (stable)."""
    return min(results, key=lambda r: (r.loss, r.number))
