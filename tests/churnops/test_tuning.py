"""The TPE sweep loop: fmin's sequence when serial, sound bookkeeping with several slots, and a
tripwire on the hyperopt code it relies on."""

from __future__ import annotations

import functools
from dataclasses import replace
from importlib.metadata import version

import numpy as np

from churnops.tasks import task_for
from churnops.training import Split
from churnops.tuning import SerialEngine, SweepConfig, run_sweep, search_space, tpe_trials
from tests.tripwire import changed

N_TRIALS, N_STARTUP, SEED = 14, 5, 7


def bowl(p: dict) -> float:
    """A cheap loss with one minimum inside the space (TPE steers towards it after startup)."""
    return (np.log(p["learning_rate"]) - np.log(0.1)) ** 2 + (p["subsample"] - 0.8) ** 2 + p["max_depth"] / 100


def fmin_sequence() -> list[dict]:
    """The points hyperopt's own serial `fmin` evaluates for the same space, seed and TPE settings."""
    from hyperopt import STATUS_OK, Trials, fmin, tpe

    seen: list[dict] = []

    def objective(p: dict) -> dict:
        seen.append(p)
        return {"loss": bowl(p), "status": STATUS_OK}

    fmin(
        objective,
        search_space(),
        algo=functools.partial(tpe.suggest, n_startup_jobs=N_STARTUP),
        max_evals=N_TRIALS,
        trials=Trials(),
        rstate=np.random.default_rng(SEED),
        show_progressbar=False,
    )
    return seen


def test_serial_loop_is_fmins_sequence():
    """Past the random startup TPE reads the recorded losses: a loss recorded wrongly (or not at
    all) changes the sequence, so this also checks how finished trials are told to hyperopt."""
    engine = SerialEngine(lambda p: {"loss": bowl(p)})
    got = list(tpe_trials(engine, N_TRIALS, SEED, N_STARTUP, search_space(), lambda out: out["loss"]))
    expected = fmin_sequence()
    assert len(expected) == N_TRIALS
    assert [n for n, _, _ in got] == list(range(N_TRIALS))
    assert [p for _, p, _ in got] == expected


class LastInFirstOut:
    """Three slots; the most recently submitted trial finishes first (as on a cluster, out of order)."""

    slots = 3

    def __init__(self):
        self.pending: list[tuple[int, dict]] = []
        self.submitted: list[dict] = []

    def submit(self, tid: int, params: dict) -> None:
        self.pending.append((tid, params))
        self.submitted.append(params)

    def next_done(self) -> tuple[int, dict]:
        tid, params = self.pending.pop()
        return tid, {"loss": bowl(params), "params": params}


def test_loop_with_several_slots_pairs_each_result_with_its_trial():
    engine = LastInFirstOut()
    got = list(tpe_trials(engine, N_TRIALS, SEED, N_STARTUP, search_space(), lambda out: out["loss"]))
    assert sorted(n for n, _, _ in got) == list(range(N_TRIALS))
    assert [n for n, _, _ in got][:3] == [2, 3, 4]  # LIFO: trial 2 ends before 0 and 1
    for number, params, out in got:
        assert out["params"] is params and params == engine.submitted[number]
    assert len({repr(p) for p in engine.submitted}) == N_TRIALS  # no point suggested twice


def test_serial_sweep_is_deterministic_for_a_seed():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    data = Split(X[:200], y[:200], X[200:250], y[200:250], X[250:], y[250:])
    cfg = SweepConfig(n_trials=4, seed=3, max_trees=20, early_stopping=5, threads=1, n_startup=2, task=task_for())
    a, b = run_sweep(data, cfg), run_sweep(data, cfg)
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.metrics["auc_roc"] for t in a] == [t.metrics["auc_roc"] for t in b]
    assert [t.number for t in a] == [0, 1, 2, 3] and len({t.params["learning_rate"] for t in a}) == 4


# The hyperopt code churnops.tuning relies on, as in the pinned release. A new hyperopt fails here
# first: read the changed code, check tpe_trials against it, then update the pin and these hashes.
HYPEROPT_VERSION = "0.3.0"
HYPEROPT_SOURCES = {
    # how fmin records a finished trial (tpe_trials does the same on the document in `trials.trials`)
    "hyperopt.fmin:FMinIter.serial_evaluate": "ba2bd5c79e8770f0",
    "hyperopt.base:Trials.refresh": "9ff1f9596790952b",  # `trials` holds the inserted documents themselves
    "hyperopt.base:Trials.insert_trial_docs": "c98fe1bb943d43a9",
    "hyperopt.base:Trials.new_trial_ids": "ab7ed453e11a0398",
    "hyperopt.base:spec_from_misc": "4b1dc314d9f4a6d8",
}


def test_tripwire_hyperopt_version_and_code_relied_upon():
    assert version("hyperopt") == HYPEROPT_VERSION, "hyperopt changed: re-check churnops.tuning.tpe_trials"
    assert not changed(HYPEROPT_SOURCES), (
        f"hyperopt code relied upon by churnops.tuning changed: {changed(HYPEROPT_SOURCES)}"
    )


def test_dask_engine_on_a_local_cluster_runs_the_serial_sweep():
    """A tiny sweep on a one-worker `dask.distributed.LocalCluster` (in this process, reached through its
    scheduler address as `DASK_ADDRESS` would be): one slot, so TPE suggests exactly the serial
    sequence; every trial comes back through `on_trial`, with the serial engine's params and metrics,
    and the same best trial. The cluster outlives the sweep (the engine closes only its client)."""
    from dask.distributed import Client, LocalCluster

    from churnops.tuning import best_trial

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    data = Split(X[:200], y[:200], X[200:250], y[200:250], X[250:], y[250:])
    cfg = SweepConfig(n_trials=5, seed=3, max_trees=20, early_stopping=5, threads=1, n_startup=2, task=task_for())
    serial = run_sweep(data, cfg)
    logged = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        on_dask = run_sweep(
            data, replace(cfg, executor="dask", dask_address=cluster.scheduler_address), on_trial=logged.append
        )
        with Client(cluster) as c:  # still up: the engine closed its client, not the cluster
            assert len(c.scheduler_info()["workers"]) == 1
    assert sorted(t.number for t in logged) == [t.number for t in on_dask] == [0, 1, 2, 3, 4]
    assert [t.params for t in on_dask] == [t.params for t in serial]
    assert [t.metrics for t in on_dask] == [t.metrics for t in serial]
    assert [t.n_trees for t in on_dask] == [t.n_trees for t in serial]
    assert best_trial(on_dask).params == best_trial(serial).params
    assert len({t.params["learning_rate"] for t in on_dask}) == 5  # five different points, not one repeated
