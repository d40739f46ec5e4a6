"""Rejected records in the window's data quality: real requests refused by the API are counted by
reason and field into the line's store, and the window summary, its quality, the trigger reasons,
the report section and the gauges carry them."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from churnops.contract import load_contract
from churnops.monitoring.gauges import DriftGauges
from churnops.monitoring.quality import data_quality, quality_reasons
from churnops.monitoring.window import summarize
from reporting.report import rejections_section
from tests.support.serving import example, open_stores


def test_rejected_requests_reach_the_window_summary(app_client, serving_settings):
    client, state = app_client
    start = time.time()
    for i in range(6):  # accepted: logged
        assert client.post("/predict", json={"request_id": f"ok-{i}", "features": example()}).status_code == 200
    bad = [
        {"request_id": "b1", "features": example(customer_age=999)},  # out of the declared range
        {"request_id": "b2", "features": example(customer_age=999, gender="X")},  # two fields
        {"request_id": "b3", "features": example(gender="X")},
    ]
    codes = [client.post("/predict", json=b).status_code for b in bad]
    codes.append(client.post("/predict", data="{not json", content_type="application/json").status_code)
    assert codes == [422, 422, 422, 400]
    again = client.post("/predict", json=bad[0])  # refused again: counted again
    assert again.status_code == 422 and "customer_age" in json.dumps(again.json["details"])
    assert client.get("/audit?limit=0").status_code == 422  # not a record: never counted
    state.plog.flush()
    state.rejections.flush()

    s = serving_settings.model_copy(update={"report_min_rows": 100})
    w = summarize(state.store, s, load_contract("bank_churners"), 1.0, now=time.time() + 1, fresh=True)
    assert w.summary["status"] == "insufficient_data" and w.summary["n"] == 6  # counted however few rows
    r = w.summary["rejections"]
    assert r["total"] == 5 and r["by_source"] == {"http": 5}
    assert r["by_reason"] == {"out_of_range": 3, "unknown_category": 1, "invalid_json": 1}  # a record's first
    assert r["by_field"] == {"customer_age": 3, "gender": 2, "body": 1}
    assert abs(r["rate"] - 5 / 11) < 1e-9 and r["status"] == "fail"  # 45 % > QUALITY_REJECTION_RATE 5 %
    assert start <= min(x["ts"] for x in state.store.find_rejections()) + 60

    # quality: fails on the rejections alone, and says why as a trigger reason
    q = data_quality(SimpleNamespace(features={}), w.frame, load_contract("bank_churners"), s, r)
    assert q["status"] == "fail" and q["failed_features"] == [] and q["rejections"] is r
    [why] = quality_reasons(q, s.model_copy(update={"retrain_on_quality_failure": True}))
    assert "45.5% of records rejected (5:" in why

    # report and gauges
    html = rejections_section(r)
    assert "Rejected records: fail (5, 45.5% of the window)" in html and "<td>customer_age</td><td>3</td>" in html
    reg = CollectorRegistry()
    DriftGauges(reg, multiprocess_mode=None).update(w.summary)
    text = generate_latest(reg).decode()
    assert "churn_window_rejection_rate 0.4545" in text
    assert 'churn_window_rejections{reason="' in text


def test_a_window_without_rejections_and_a_store_without_counts(app_client, serving_settings):
    client, state = app_client
    assert client.post("/predict", json={"request_id": "ok", "features": example()}).status_code == 200
    state.plog.flush()
    state.rejections.flush()
    w = summarize(state.store, serving_settings, load_contract("bank_churners"), 1.0, now=time.time() + 1, fresh=True)
    assert w.summary["rejections"] | {} == {
        "available": True,
        "total": 0,
        "rate": 0.0,
        "by_reason": {},
        "by_source": {},
        "by_field": {},
        "status": "ok",
    }
    assert "none in this window" in rejections_section(w.summary["rejections"])
    assert "not counted" in rejections_section({"available": False})


def test_both_stores_keep_rejection_counts_alike(tmp_path):
    """MongoDB (Compose) and the embedded store keep and window the counts the same way."""

    rows = [
        {"ts": 60.0, "source": "http", "reason": "out_of_range", "field": "", "count": 3},
        {"ts": 60.0, "source": "http", "reason": "out_of_range", "field": "customer_age", "count": 3},
        {"ts": 120.0, "source": "stream", "reason": "undecodable", "field": "", "count": 1},
    ]
    for name, store in open_stores(tmp_path).items():
        store.add_rejections(rows)
        store.add_rejections([])
        assert store.find_rejections() == rows, name
        assert store.find_rejections(start=61.0) == rows[2:], name
        assert store.find_rejections(end=120.0) == rows[:2], name
        store.close()
