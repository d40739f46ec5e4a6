"""Concurrent `POST /model/reload` on two workers end on one generation and one model (issue 19)."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

RUNS = {"a": "a" * 32, "b": "b" * 32}


def fake_build(s, champion=None, challenger=True, generation=0):
    """A model set naming `champion`, after a load long enough for the other reload to overlap it."""
    from serving import model as M

    time.sleep(0.5)
    uri = champion or "runs:/" + "0" * 32 + "/model"
    loaded = M.LoadedModel(bundle=None, uri=uri, run_id=uri.split("/")[1], version=None, aliases=[], route="champion")
    return M.ModelSet(loaded, None, 0.0, generation)


def reload_worker(state_dir: str, name: str, barrier, out) -> None:
    """One gunicorn worker's view: start on generation 0, reload to `name` at the same moment as the other."""
    from churnops.settings import Settings
    from serving import model as M

    M.build_model_set = fake_build
    mm = M.ModelManager(Settings(_env_file=None, state_dir=Path(state_dir)))
    mm.freeze_gc = False
    mm.current = fake_build(None)
    barrier.wait(timeout=60)
    try:
        own = mm.reload(f"runs:/{RUNS[name]}/model").generation
    except M.ReloadSuperseded:
        own = None
    barrier.wait(timeout=60)  # both reloads are over: now each follows what was published
    mm.follow_state()
    out.put((name, own, mm.current.generation, mm.current.champion.uri))


def test_two_workers_reloading_at_once_end_on_the_same_generation_and_model(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=reload_worker, args=(str(tmp_path), n, barrier, out)) for n in RUNS]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        name, own, gen, uri = out.get(timeout=120)
        results[name] = (own, gen, uri)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    owns = sorted(own for own, _, _ in results.values() if own is not None)
    assert len({(gen, uri) for _, gen, uri in results.values()}) == 1, f"workers serve different models: {results}"
    (gen, uri) = {(gen, uri) for _, gen, uri in results.values()}.pop()
    assert gen == 2, results  # the reloads took generations 1 and 2, never both 1
    winner = next(n for n, (own, _, _) in results.items() if own == 2)
    assert uri == f"runs:/{RUNS[winner]}/model" and owns[-1] == 2
