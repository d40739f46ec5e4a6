"""Servers on `models:/<name>@champion` follow a promotion / rollback by themselves; RUN_ID pins stay."""

from __future__ import annotations

import threading

import numpy as np


def test_champion_server_follows_promotion_and_rollback_without_failed_requests(trained, own_model, tmp_path):
    import mlflow

    from churnops.governance import promote, rollback
    from churnops.registry import alias_version
    from serving.model import ModelManager

    name = own_model.model_name
    s = own_model.model_copy(
        update={"model_uri": f"models:/{name}@champion", "run_id": None, "state_dir": tmp_path, "canary_fraction": 0.0}
    )
    mm = ModelManager(s)
    mm.freeze_gc = False
    mm.load_initial()
    before = alias_version(name, "champion", s).version
    assert mm.current.champion.version == before
    assert mm.follow_alias() is False  # alias unchanged: nothing loaded

    pinned = ModelManager(s.model_copy(update={"model_uri": None, "run_id": trained["run_id"]}))
    pinned.freeze_gc = False
    pinned.load_initial()

    mlflow.set_registry_uri(s.mlflow_tracking_uri)
    new = str(mlflow.register_model(f"runs:/{trained['run_id']}/model", name).version)
    errors, seen, stop = [], set(), threading.Event()

    def traffic():
        X = np.zeros((1, mm.current.champion.bundle.encoder.width), dtype=np.float32)
        while not stop.is_set():
            try:
                m = mm.current.champion
                assert np.isfinite(m.bundle.predict_matrix(X)).all()
                seen.add(m.version)
            except Exception as exc:  # any failed request fails the test
                errors.append(exc)

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        promote(new, "test promotion", s)
        assert mm.follow_alias() is True and mm.current.champion.version == new
        assert pinned.follow_alias() is False and pinned.current.champion.run_id == trained["run_id"]
        rollback("test rollback", None, s)
        assert mm.follow_alias() is True and mm.current.champion.version == before
    finally:
        stop.set()
        t.join(10)
    assert errors == []
    assert {before, new} <= seen
