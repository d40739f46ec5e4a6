"""MongoDB (Compose) and the embedded store behave alike behind the API: indexes and `/logs`."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.serving import example, local_model_set, open_stores


def test_mongo_indexes_the_fields_the_embedded_store_indexes(tmp_path):
    import sqlite3

    stores = open_stores(tmp_path)
    for st in stores.values():
        st.insert_predictions([{"_id": "a", "ts": 1.0, "request_id": "a", "source": "http", "features": {}}])
        st.add_feedback("a", 1, 2.0)
        st.save_report({"_id": "r1", "ts": 3.0})
    with sqlite3.connect(tmp_path / "p.db") as db:
        sql = " ".join(
            r[0] for r in db.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        )
    mongo = stores["mongo"].db
    keys = {
        c: {k for ix in mongo[c].index_information().values() for k, _ in ix["key"]}
        for c in ("predictions", "feedback", "reports")
    }
    # the embedded store indexes time on predictions (per chunk), feedback and reports: so does MongoDB
    assert "ts_min" in sql and "feedback (ts)" in sql and "reports (ts)" in sql
    assert {"ts", "request_id"} <= keys["predictions"] and {"ts", "request_id"} <= keys["feedback"]
    assert "ts" in keys["reports"]
    for st in stores.values():
        st.close()


@pytest.mark.parametrize("backend", ["sqlite", "mongo"])
def test_logs_endpoint_answers_the_same_on_both_stores(backend, serving_settings, bundles, tmp_path):
    from serving.app import create_app
    from serving.model import ModelManager

    stores = open_stores(tmp_path)
    store = stores[backend]
    mm = ModelManager(serving_settings)
    mm.current = local_model_set(bundles)
    app = create_app(serving_settings, store=store, models=mm, start_background=False)
    state = app.extensions["churn"]
    state.plog.start()
    client = app.test_client()
    try:
        t0 = time.time()
        for i in range(5):
            r = client.post(
                "/predict",
                data=json.dumps({"request_id": f"w{i}", "features": example()}),
                content_type="application/json",
            )
            assert r.status_code == 200, r.json
        deadline = time.monotonic() + 5
        while store.count_predictions() < 5 and time.monotonic() < deadline:
            state.plog.flush()
            time.sleep(0.05)
        r = client.get(f"/logs?start={t0 - 1}&limit=3")
        assert r.status_code == 200 and r.json["count"] == 3 and r.json["limit"] == 3
        recs = r.json["records"]
        assert [x["request_id"] for x in recs] == ["w0", "w1", "w2"]
        # every prediction is its own log entry: the entry's _id is its own, not the client's request_id
        assert len({x["_id"] for x in recs}) == 3 and not {x["_id"] for x in recs} & {"w0", "w1", "w2"}
        assert {"ts", "source", "model_run_id", "route", "features", "probability", "decision"} <= set(recs[0])
        assert recs[0]["source"] == "http" and recs[0]["features"]["gender"] == example()["gender"]
        assert client.get(f"/logs?start={t0 + 3600}").json["count"] == 0
        assert client.get("/logs?limit=0").status_code == 422
    finally:
        state.plog.close()
        for st in stores.values():
            st.close()
