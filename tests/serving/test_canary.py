"""Canary routing: deterministic by request_id, split within tolerance, labelled everywhere."""

from __future__ import annotations

import json

import numpy as np

from serving.model import route_fraction
from tests.support.serving import example, local_model_set, post


def test_route_fraction_is_uniform_and_stable():
    xs = np.array([route_fraction(f"id-{i}") for i in range(20_000)])
    assert 0 <= xs.min() and xs.max() < 1
    assert abs(xs.mean() - 0.5) < 0.01 and abs((xs < 0.3).mean() - 0.3) < 0.015
    assert route_fraction("abc") == route_fraction("abc")


def test_route_fraction_known_answer():
    # SHA-256("abc") begins ba7816bf8f01cfea (the FIPS 180-2 test vector): 0xba7816bf8f01cfea / 2**64
    assert route_fraction("abc") == 0xBA7816BF8F01CFEA / 2.0**64 == 0.7283949105904022


# The routes of request ids c0..c39 at a 50 % canary (X = challenger), written down once: a change of the
# routing function (which would move live customers between models) fails here.
ROUTES_C = "XOOXXOXOXOXOOXOOXXXXOOXXXXXOOOOOXXOXXOOX"


def _route(i: int) -> str:
    return "challenger" if ROUTES_C[i] == "X" else "champion"


def test_model_set_split_and_labels(bundles):
    ms = local_model_set(bundles, 0.3)
    routes = [ms.pick(f"req{i}").route for i in range(2000)]
    share = routes.count("challenger") / 2000
    assert abs(share - 0.3) < 0.05
    assert all(ms.pick(f"req{i}").route == routes[i] for i in range(200))
    assert local_model_set(bundles, 0.0).challenger is None


def test_http_canary_labels_response_and_log(serving_settings, bundles):
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager

    mm = ModelManager(serving_settings)
    mm.current = local_model_set(bundles, 0.5)
    store = SQLiteStore(serving_settings.state_dir / "p.db")
    app = create_app(serving_settings, store=store, models=mm, start_background=False)
    c = app.test_client()
    seen = {}
    for i in range(40):
        b = post(c, "/predict", {"request_id": f"c{i}", "features": example()}).json
        assert b["route"] == _route(i)
        assert b["model_run_id"] == ("localrun2" if b["route"] == "challenger" else "localrun1")
        seen[b["route"]] = b["probability"]
        again = post(c, "/predict", {"request_id": f"c{i}", "features": example()}).json
        assert again["route"] == b["route"]
    assert set(seen) == {"champion", "challenger"} and seen["champion"] != seen["challenger"]
    batch = post(c, "/predict/batch", [{"request_id": f"c{i}", "features": example()} for i in range(20)]).json
    assert [p["route"] for p in batch["predictions"]] == [_route(i) for i in range(20)]
    app.extensions["churn"].plog.flush()
    routes = {r["route"] for r in store.find_predictions()}
    assert routes == {"champion", "challenger"}
    assert json.loads(c.get("/model").data)["challenger"]["run_id"] == "localrun2"
