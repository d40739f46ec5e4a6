"""`?explain=true` and shadow traffic through the app (Flask test client, local bundles)."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest
import xgboost as xgb

from tests.support.serving import example, ids, local_model_set


def post(client, path, body):
    return client.post(path, data=json.dumps(body), content_type="application/json")


@pytest.fixture
def make_app(tmp_path, monkeypatch, bundles):
    """make_app(**settings) -> (client, state); every app made is closed at the end."""
    from churnops.settings import Settings
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    made = []

    def make(name="app", **over):
        s = Settings(
            _env_file=None,
            state_dir=tmp_path / name,
            log_flush_interval_s=0.05,
            batch_row_limit=50,
            mlflow_tracking_uri="http://127.0.0.1:9",
            **over,
        )
        store = SQLiteStore(s.state_dir / "predictions.db")
        mm = ModelManager(s)
        mm.current = local_model_set(bundles)
        app = create_app(s, store=store, models=mm, start_background=False)
        state = app.extensions["churn"]
        state.plog.start()
        made.append((state, store))
        return app.test_client(), state

    yield make
    for state, store in made:
        state.shadow.stop()
        state.plog.close()
        store.close()


def logged(state, n, timeout=10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state.plog.flush()
        recs = state.store.find_predictions()
        if len(recs) >= n:
            return recs
        time.sleep(0.05)
    raise AssertionError(f"only {state.store.count_predictions()} of {n} records logged")


def shadow_count(state, outcome) -> float:
    return state.metrics.shadow.labels(outcome)._value.get()


# ---- explanations ---------------------------------------------------------------------------------------


def test_predict_explain_matches_the_booster(make_app, bundles):
    client, state = make_app()
    r = client.post("/predict?explain=true&top_k=4", data=json.dumps(example()), content_type="application/json")
    assert r.status_code == 200, r.json
    e = r.json["explanation"]
    booster = xgb.Booster()
    booster.load_model(str(bundles["a"] / "booster.json"))
    X = state.models.current.champion.bundle.encoder.transform_records([example()])
    margin = float(booster.predict(xgb.DMatrix(X), output_margin=True)[0])
    assert sum(e["contributions"].values()) + e["bias"] == pytest.approx(margin, abs=1e-5)
    p = 1 / (1 + np.exp(-margin))  # the answer's probability is the margin's logistic
    assert r.json["probability"] == pytest.approx(p, abs=1e-5)
    assert len(e["top"]) == 4 and e["top"][0]["label"]
    plain = post(client, "/predict", example()).json
    assert "explanation" not in plain and plain["probability"] == r.json["probability"]


def test_batch_explain_per_row(make_app):
    client, state = make_app()
    rows = [{"request_id": f"b{i}", "features": example(customer_age=30 + i)} for i in range(6)]
    r = client.post("/predict/batch?explain=1", data=json.dumps(rows), content_type="application/json")
    assert r.status_code == 200, r.json
    got = r.json["predictions"]
    single = [
        client.post("/predict?explain=true", data=json.dumps(x), content_type="application/json").json for x in rows
    ]
    for b, one in zip(got, single):
        assert b["request_id"] == one["request_id"]
        assert b["explanation"]["contributions"] == pytest.approx(one["explanation"]["contributions"], abs=1e-6)
        assert b["explanation"]["top"][0]["value"] == one["explanation"]["top"][0]["value"]


def test_bad_explain_parameters_are_422_naming_them(make_app):
    client, state = make_app()
    r = client.post("/predict?explain=maybe", data=json.dumps(example()), content_type="application/json")
    assert r.status_code == 422 and "explain" in r.json["details"]
    r = client.post("/predict?explain=true&top_k=0", data=json.dumps(example()), content_type="application/json")
    assert r.status_code == 422 and "top_k" in r.json["details"]
    r = client.post("/predict/batch?explain=2", data=json.dumps([example()]), content_type="application/json")
    assert r.status_code == 422 and "explain" in r.json["details"]


def test_a_batch_too_large_to_explain_is_413_naming_the_limit(make_app):
    client, state = make_app(explain_max_rows=3)
    rows = [example(customer_age=30 + i) for i in range(4)]
    r = client.post("/predict/batch?explain=true", data=json.dumps(rows), content_type="application/json")
    assert r.status_code == 413 and "EXPLAIN_MAX_ROWS 3" in r.json["details"]["explain"]
    ok = client.post("/predict/batch?explain=true", data=json.dumps(rows[:3]), content_type="application/json")
    assert ok.status_code == 200 and all("explanation" in p for p in ok.json["predictions"])


def test_a_model_without_trees_answers_422_and_logs_nothing(make_app, bundles, tmp_path):
    from serving.model import ModelSet, load_model

    onnx_only = tmp_path / "onnx-only"
    shutil.copytree(bundles["a"], onnx_only)
    (onnx_only / "booster.json").unlink()
    client, state = make_app()
    state.models.current = ModelSet(load_model(str(onnx_only), "champion"))
    r = client.post("/predict?explain=true", data=json.dumps(example()), content_type="application/json")
    assert r.status_code == 422, r.json
    assert "no XGBoost booster" in r.json["details"]["explain"]
    r = client.post("/predict/batch?explain=true", data=json.dumps([example()]), content_type="application/json")
    assert r.status_code == 422 and "booster" in r.json["details"]["explain"]
    assert post(client, "/predict", example()).status_code == 200  # without explain it still answers
    state.plog.flush()
    assert state.store.count_predictions() == 1  # the refused ones left nothing in the log


# ---- shadow traffic ------------------------------------------------------------------------------------


def answers(client, n_single=5, n_batch=8) -> list[dict]:
    out = []
    for rid in ids(n_single, "s"):
        b = post(client, "/predict", {"request_id": rid, "features": example(customer_age=40 + len(out))}).json
        out.append(b)
    rows = [{"request_id": rid, "features": example(total_trans_ct=30 + i)} for i, rid in enumerate(ids(n_batch, "t"))]
    out += post(client, "/predict/batch", rows).json["predictions"]
    for b in out:
        b.pop("latency_ms", None)
    return out


def test_shadow_logs_the_candidate_under_the_same_request_id_and_never_changes_an_answer(make_app, bundles):
    from serving.model import load_model

    candidate = load_model(str(bundles["b"]), "shadow")
    plain_client, _ = make_app("plain", shadow_fraction=0.0)
    client, state = make_app("shadow", shadow_fraction=1.0)
    state.shadow.load_candidate = lambda champion: candidate
    with_shadow, without = answers(client), answers(plain_client)
    assert with_shadow == without  # same answers, SHADOW_FRACTION=1 and 0
    assert state.shadow.drain()
    recs = logged(state, 26)
    shadow = {r["request_id"]: r for r in recs if r["route"] == "shadow"}
    champ = {r["request_id"]: r for r in recs if r["route"] == "champion"}
    assert set(shadow) == set(champ) == {b["request_id"] for b in with_shadow}
    rid = "s00000"
    expected = candidate.bundle.predict_records([champ[rid]["features"]])[0]
    assert shadow[rid]["probability"] == pytest.approx(expected, abs=1e-6)
    assert shadow[rid]["model_run_id"] == "localrun2" and champ[rid]["model_run_id"] == "localrun1"
    assert shadow["t00003"]["features"]["total_trans_ct"] == 33
    assert shadow_count(state, "logged") >= 13


def test_a_failing_or_stuck_candidate_does_not_touch_the_answer(make_app, bundles):
    from serving.model import load_model

    plain_client, _ = make_app("plain", shadow_fraction=0.0)
    client, state = make_app("fail", shadow_fraction=1.0, shadow_queue_max=1)
    broken = load_model(str(bundles["b"]), "shadow")

    def boom(X):
        raise RuntimeError("candidate exploded")

    broken.bundle.predict_matrix = boom
    state.shadow.load_candidate = lambda champion: broken
    failed_before = shadow_count(state, "failed")
    assert answers(client, 3, 2) == answers(plain_client, 3, 2)
    assert state.shadow.drain()
    assert shadow_count(state, "failed") >= failed_before + 1
    recs = logged(state, 5)
    assert {r["route"] for r in recs} == {"champion"}

    # a candidate that never returns: answers keep coming, the full queue drops mirrors and counts them
    gate = threading.Event()
    stuck = load_model(str(bundles["b"]), "shadow")
    stuck.bundle.predict_matrix = lambda X: gate.wait(30) and np.zeros(len(X))
    state.shadow.candidate_for = "changed"  # look the candidate up again
    state.shadow.load_candidate = lambda champion: stuck
    dropped_before = shadow_count(state, "dropped_queue_full")
    assert answers(client, 4, 3) == answers(plain_client, 4, 3)
    assert shadow_count(state, "dropped_queue_full") >= dropped_before + 2
    gate.set()


def test_no_candidate_is_counted_and_nothing_is_mirrored(make_app):
    client, state = make_app("none", shadow_fraction=1.0)
    state.shadow.load_candidate = lambda champion: None
    before = shadow_count(state, "no_candidate")
    post(client, "/predict", {"request_id": "n1", "features": example()})
    assert state.shadow.drain()
    assert shadow_count(state, "no_candidate") == before + 1
    assert {r["route"] for r in logged(state, 1)} == {"champion"}


def test_the_sample_is_deterministic_per_request_id():
    from serving.shadow import mirrored

    picked = [mirrored(f"r{i}", 0.3) for i in range(4000)]
    assert 0.27 < sum(picked) / len(picked) < 0.33
    assert picked == [mirrored(f"r{i}", 0.3) for i in range(4000)]
    assert not any(mirrored(f"r{i}", 0.0) for i in range(100)) and all(mirrored(f"r{i}", 1.0) for i in range(100))
