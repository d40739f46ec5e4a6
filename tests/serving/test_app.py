"""The HTTP API through Flask's test client: every endpoint, every class of bad input."""

from __future__ import annotations

import io
import json
import time

import pytest

from tests.support.serving import example, post, wait_logged


def test_predict_bare_and_envelope_and_log(app_client):
    client, state = app_client
    r = post(client, "/predict", example())
    assert r.status_code == 200, r.json
    b = r.json
    assert 0.0 <= b["probability"] <= 1.0 and b["decision"] == int(b["probability"] >= b["threshold"])
    assert b["route"] == "champion" and b["model_run_id"] == "localrun1" and len(b["request_id"]) == 32
    expected = state.models.current.champion.bundle.predict_records([example()])[0]
    assert b["probability"] == pytest.approx(expected, abs=1e-6)
    r2 = post(client, "/predict", {"request_id": "abc-1", "features": example(extra_field=1)})
    assert r2.status_code == 200 and r2.json["request_id"] == "abc-1"
    assert r2.json["ignored_fields"] == ["extra_field"]
    assert r2.json["probability"] == pytest.approx(b["probability"])
    wait_logged(state, 2)
    recs = {x["request_id"]: x for x in state.store.find_predictions()}
    rec = recs["abc-1"]
    assert rec["source"] == "http" and rec["route"] == "champion" and rec["features"]["gender"] == "m"
    assert rec["probability"] == pytest.approx(b["probability"]) and rec["latency_ms"] > 0


def test_flask_view_answers_what_the_fast_path_passes_on(app_client):
    """A chunked upload (no Content-Length) skips the WSGI fast path: the Flask view gives the same answer."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    client, state = app_client

    def ok_count() -> float:  # metrics are process-wide: compare before and after
        for line in client.get("/metrics").data.decode().splitlines():
            if line.startswith('churn_http_requests_total{endpoint="/predict",method="POST",status="200"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = ok_count()
    fast = post(client, "/predict", {"request_id": "fast-1", "features": example()}).json
    env = EnvironBuilder(
        path="/predict",
        method="POST",
        content_type="application/json",
        input_stream=io.BytesIO(json.dumps({"request_id": "view-1", "features": example()}).encode()),
        headers={"Transfer-Encoding": "chunked"},
    ).get_environ()
    del env["CONTENT_LENGTH"]
    env["wsgi.input_terminated"] = True  # what gunicorn sets for a chunked upload
    body, status, _ = run_wsgi_app(client.application, env, buffered=True)
    view = json.loads(b"".join(body))
    assert status.startswith("200"), view
    assert view["request_id"] == "view-1" and view["probability"] == fast["probability"]
    assert ok_count() == before + 2  # counted once each, by the fast path and by the view
    wait_logged(state, 2)


def test_unknown_marker_and_case_are_accepted(app_client):
    client, _ = app_client
    r = post(client, "/predict", example(education_level="Unknown", gender="M", customer_age="45"))
    assert r.status_code == 200, r.json


@pytest.mark.parametrize(
    "body,field,fragment",
    [
        ({k: v for k, v in example().items() if k != "gender"}, "gender", "missing"),
        (example(customer_age="old"), "customer_age", "expected a number"),
        (example(customer_age=True), "customer_age", "expected a number"),
        (example(gender=1), "gender", "expected a string"),
        (example(card_category="diamond"), "card_category", "unknown category"),
        (example(customer_age=150), "customer_age", "above maximum"),
        (example(avg_utilization_ratio=-0.5), "avg_utilization_ratio", "below minimum"),
        (example(credit_limit=None), "credit_limit", "null"),
        ({"request_id": "x", "features": [1, 2]}, "features", "expected an object"),
        ({"request_id": {"a": 1}, "features": example()}, "request_id", "string"),
    ],
)
def test_contract_violations_name_the_field(app_client, body, field, fragment):
    client, _ = app_client
    r = post(client, "/predict", body)
    assert r.status_code == 422
    assert r.json["error"] and field in r.json["details"], r.json
    assert fragment in r.json["details"][field]


def test_several_problems_are_all_listed(app_client):
    client, _ = app_client
    body = example(customer_age=-1, gender="x")
    del body["total_trans_ct"]
    r = post(client, "/predict", body)
    assert r.status_code == 422
    assert set(r.json["details"]) == {"customer_age", "gender", "total_trans_ct"}


@pytest.mark.parametrize(
    "raw,fragment",
    [
        ('{"customer_age": NaN}', "NaN"),
        ('{"customer_age": Infinity}', "Infinity"),
        ('{"customer_age": -Infinity}', "Infinity"),
        ("not json", "Expecting value"),
        ("", "empty"),
        ("   ", "empty"),
        (b"\xff\xfe{", "UTF-8"),
    ],
)
def test_bad_json_is_400(app_client, raw, fragment):
    client, _ = app_client
    r = post(client, "/predict", raw)
    assert r.status_code == 400 and "body" in r.json["details"], r.json
    assert fragment.lower() in (r.json["details"]["body"] + r.json["error"]).lower()


def test_unknown_category_mapping_setting(serving_settings, bundles):
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager
    from tests.support.serving import local_model_set

    s = serving_settings.model_copy(update={"unknown_category": "unknown"})
    mm = ModelManager(s)
    mm.current = local_model_set(bundles)
    app = create_app(s, store=SQLiteStore(s.state_dir / "p.db"), models=mm, start_background=False)
    r = post(app.test_client(), "/predict", example(card_category="diamond", marital_status="widowed"))
    assert r.status_code == 200, r.json


def test_body_too_large_is_413(app_client):
    client, _ = app_client
    r = post(client, "/predict", json.dumps(example(pad="x" * 30_000)))
    assert r.status_code == 413 and "body" in r.json["details"]


def test_batch(app_client):
    client, state = app_client
    rows = [example(customer_age=30 + i) for i in range(10)] + [{"request_id": "b-1", "features": example()}]
    r = post(client, "/predict/batch", rows)
    assert r.status_code == 200, r.json
    assert r.json["count"] == 11 and r.json["predictions"][-1]["request_id"] == "b-1"
    single = post(client, "/predict", example(customer_age=33)).json["probability"]
    assert r.json["predictions"][3]["probability"] == pytest.approx(single)
    wait_logged(state, 12)


def test_batch_rows_answer_like_single_predictions(app_client):
    client, _ = app_client
    odd = 'q"uo\\te\t\u00e9\u4e2d'  # a request_id JSON must escape
    rows = [
        {"request_id": odd, "features": example()},
        example(customer_age=61, extra_field=1),
        {"request_id": "plain", "features": example(total_trans_ct=20)},
    ]
    r = post(client, "/predict/batch", rows)
    assert r.status_code == 200, r.json
    got = r.json["predictions"]
    assert got[0]["request_id"] == odd and got[2]["request_id"] == "plain"
    assert got[1]["ignored_fields"] == ["extra_field"] and "ignored_fields" not in got[0]
    for row, answer in zip(rows, got):
        features = row.get("features", row)
        single = post(client, "/predict", {"request_id": answer["request_id"], "features": features}).json
        del single["latency_ms"]  # the batch gives one for the whole request
        assert list(answer) == list(single)  # the same fields in the same order
        assert answer == single | {"probability": pytest.approx(single["probability"])}


def test_request_id_that_utf8_cannot_carry_is_rejected(app_client):
    client, state = app_client
    lone = '{"request_id": "a\\ud800b", "features": %s}' % json.dumps(example())  # valid JSON, not valid text
    r = post(client, "/predict", lone)
    assert r.status_code == 422 and "request_id" in r.json["details"]
    r = post(client, "/predict/batch", "[%s, %s]" % (json.dumps(example()), lone))
    assert r.status_code == 422 and "1.request_id" in r.json["details"]
    assert post(client, "/predict/batch", [example(), example()]).status_code == 200
    state.plog.flush()
    assert state.plog.spool_files() == [] and state.plog.store_ok


def test_batch_errors(app_client):
    client, _ = app_client
    r = post(client, "/predict/batch", [example(), example(gender="q"), example(customer_age=None)])
    assert r.status_code == 422 and set(r.json["details"]) == {"1.gender", "2.customer_age"}
    r = post(client, "/predict/batch", [{"a": 1}] * 51)
    assert r.status_code == 413 and "51 rows" in r.json["details"]["body"]
    assert post(client, "/predict/batch", example()).status_code == 422
    assert post(client, "/predict/batch", []).status_code == 422
    r = post(client, "/predict/batch", [{"request_id": "d", "features": example()}] * 2)
    assert r.status_code == 422 and "request_id" in r.json["details"]


def test_json_errors_for_404_405(app_client):
    client, _ = app_client
    r = client.get("/nope")
    assert r.status_code == 404 and r.json["error"] == "not found"
    r = client.get("/predict")
    assert r.status_code == 405 and "method" in r.json["details"]


def test_unexpected_error_is_json_500(app_client, monkeypatch):
    client, state = app_client
    monkeypatch.setattr(
        state.models.current.champion.bundle,
        "predict_records",
        lambda rows: (_ for _ in ()).throw(RuntimeError("boom")),
    )
    r = post(client, "/predict", example())
    assert r.status_code == 500 and r.json["details"]["exception"] == "RuntimeError"
    monkeypatch.undo()
    assert post(client, "/predict", example()).status_code == 200


def test_health_ready_model_and_not_ready(app_client, serving_settings):
    client, state = app_client
    assert client.get("/health").json["status"] == "ok"
    assert client.get("/ready").status_code == 200
    m = client.get("/model").json
    assert m["champion"]["run_id"] == "localrun1" and m["champion"]["runtime"] == "onnx"
    assert m["champion"]["threshold"] == 0.5 and m["champion"]["test_metrics"]["auc_roc"] == 0.9
    assert m["challenger"] is None
    state.models.current, ms = None, state.models.current
    assert client.get("/ready").status_code == 503
    r = post(client, "/predict", example())
    assert r.status_code == 503 and "model" in r.json["details"]
    state.models.current = ms


def test_logs_window(app_client):
    client, state = app_client
    t0 = time.time()
    for i in range(5):
        post(client, "/predict", {"request_id": f"w{i}", "features": example()})
    wait_logged(state, 5)
    r = client.get(f"/logs?start={t0 - 1}&limit=3")
    assert r.status_code == 200 and r.json["count"] == 3
    assert [x["request_id"] for x in r.json["records"]] == ["w0", "w1", "w2"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + 3600))
    assert client.get(f"/logs?start={iso}").json["count"] == 0
    assert client.get("/logs?start=yesterday").json["details"]["start"]
    assert client.get("/logs?limit=0").status_code == 422
    assert "end" in client.get("/logs?start=10&end=5").json["details"]


def test_feedback(app_client):
    client, state = app_client
    assert post(client, "/feedback", {"request_id": "f1", "outcome": 1}).status_code == 202
    assert post(client, "/feedback", {"request_id": "f2", "label": "Existing Customer"}).status_code == 202
    assert post(client, "/feedback", {"request_id": "f3", "label": "attrited customer"}).status_code == 202
    r = post(client, "/feedback", {"request_id": "f4", "outcome": 7})
    assert r.status_code == 422 and "outcome" in r.json["details"]
    r = post(client, "/feedback", {"outcome": 1})
    assert r.status_code == 422 and "request_id" in r.json["details"]
    assert "label" in post(client, "/feedback", {"request_id": "f5", "label": "maybe"}).json["details"]
    state.plog.flush()
    fb = {f["request_id"]: f["outcome"] for f in state.store.find_feedback()}
    assert fb == {"f1": 1, "f2": 0, "f3": 1}


def test_metrics_count_predictions_and_rejections(app_client):
    from prometheus_client import REGISTRY

    client, _ = app_client

    def val(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = val("churn_rejections_total", source="http", reason="unknown_category")
    before_p = val(
        "churn_predictions_total", source="http", route="champion", model_version="None", decision="0"
    ) + val("churn_predictions_total", source="http", route="champion", model_version="None", decision="1")
    post(client, "/predict", example(card_category="diamond"))
    post(client, "/predict", example())
    assert val("churn_rejections_total", source="http", reason="unknown_category") == before + 1
    after_p = val("churn_predictions_total", source="http", route="champion", model_version="None", decision="0") + val(
        "churn_predictions_total", source="http", route="champion", model_version="None", decision="1"
    )
    assert after_p == before_p + 1
    text = client.get("/metrics").get_data(as_text=True)
    assert "churn_rejections_total" in text and "churn_prediction_latency_seconds_bucket" in text


def test_openapi_and_index(app_client):
    client, _ = app_client
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.") and "/predict" in spec["paths"] and "/predict/batch" in spec["paths"]
    assert spec["components"]["schemas"]["Features"]["properties"]["gender"]["enum"] == ["f", "m"]
    features = spec["components"]["schemas"]["Features"]
    assert features["properties"]["customer_age"]["minimum"] == 18  # numeric inputs get the contract's range
    # the form is prefilled with the contract's example, which the API accepts as it is
    assert set(features["example"]) == set(features["properties"])
    assert client.post("/predict", json=features["example"]).status_code == 200
    html = client.get("/").get_data(as_text=True)
    assert "<form" in html and 'fetch("/predict"' in html and "<select" in html and "/openapi.json" in html


def test_reload_auth_and_refused_target_keeps_old(app_client, bundles, serving_settings):
    """Auth, and a local bundle folder is not a reload target (successful reloads: tests/serving/test_reload.py)."""
    client, state = app_client
    assert client.post("/model/reload").status_code == 401
    assert client.post("/model/reload", headers={"X-Admin-Token": "wrong"}).status_code == 401
    token = (serving_settings.state_dir / "admin_token").read_text().strip()
    hdr = {"Authorization": f"Bearer {token}"}
    r = post(client, "/model/reload", {"model_uri": str(bundles["native"])}, headers=hdr)
    assert r.status_code == 422 and "runs:/<32-hex run id>" in r.json["details"]["model_uri"], r.json
    assert post(client, "/predict", example()).json["model_run_id"] == "localrun1"
    assert not (serving_settings.state_dir / "serving-model.json").exists()


def test_drift_blueprint_is_registered(app_client):
    """The API always serves `/drift/*` (serving.drift); a bad window is refused before any computation."""
    from serving.app import create_app

    _, state = app_client
    app = create_app(state.settings, store=state.store, models=state.models, start_background=False)
    assert app.blueprints["drift"].import_name == "serving.drift"
    r = app.test_client().get("/drift/report?hours=abc")
    assert r.status_code == 422 and "hours" in r.json["details"], r.json


def test_fast_validator_matches_contract_validation():
    """The fast path gives exactly what churnops.contract.validate_record gives, on valid and invalid input."""
    import random as rnd

    from churnops.contract import load_contract, validate_record
    from churnops.speed.records import FastValidator

    contract = load_contract("bank_churners")
    odd = [
        None,
        True,
        "12",
        " M ",
        "Unknown",
        "unknown",
        "UNKNOWN ",
        float("nan"),
        float("inf"),
        -1,
        10**400,
        1e9,
        "diamond",
        3.5,
        [],
        {},
        "blue",
        "f",
        "graduate",
        "$120k +",
    ]
    rng = rnd.Random(7)
    for mode in ("reject", "unknown"):
        fast = FastValidator(contract.validator(), mode)
        for _ in range(3000):
            rec = example()
            for _k in range(rng.choice([0, 0, 1, 2])):
                rec[rng.choice(list(rec))] = rng.choice(odd)
            if rng.random() < 0.1:
                rec.pop(rng.choice(list(rec)))
            if rng.random() < 0.1:
                rec["extra"] = 1
            try:
                want = validate_record(rec, contract, mode)
            except OverflowError:
                assert fast(rec).errors
                continue
            got = fast(rec)
            assert (got.values, got.errors, got.ignored) == (want.values, want.errors, want.ignored), rec


def test_audit_is_paged_newest_first(app_client):
    client, state = app_client
    for i in range(3):
        state.store.add_audit(
            {
                "actor": "ana",
                "action": "promote",
                "from_version": str(i),
                "to_version": str(i + 1),
                "reason": f"r{i}",
                "rules": [],
            }
        )
    r = client.get("/audit?limit=2")
    assert r.status_code == 200 and [x["reason"] for x in r.json["records"]] == ["r2", "r1"]
    assert r.json["next_offset"] == 2
    r2 = client.get("/audit?limit=2&offset=2")
    assert [x["reason"] for x in r2.json["records"]] == ["r0"] and r2.json["next_offset"] is None
    bad = client.get("/audit?limit=0&offset=-1")
    assert bad.status_code == 422 and set(bad.json["details"]) == {"limit", "offset"}


def test_audit_filtered_by_model(app_client):
    """`/audit?model=` keeps one registered model's records (two lines writing one trail)."""
    client, state = app_client
    for i, model in enumerate(["churn-xgboost", "diabetes-xgboost", "churn-xgboost", "diabetes-xgboost"]):
        state.store.add_audit({"action": "promote", "model": model, "to_version": str(i), "reason": f"r{i}"})
    r = client.get("/audit?model=diabetes-xgboost")
    assert r.status_code == 200 and r.json["model"] == "diabetes-xgboost"
    assert [(x["model"], x["reason"]) for x in r.json["records"]] == [
        ("diabetes-xgboost", "r3"),
        ("diabetes-xgboost", "r1"),
    ]
    assert [x["reason"] for x in client.get("/audit?model=churn-xgboost&limit=1").json["records"]] == ["r2"]
    assert client.get("/audit?model=nobody").json["records"] == []
    assert len(client.get("/audit").json["records"]) == 4
    bad = client.get("/audit?model=")
    assert bad.status_code == 422 and set(bad.json["details"]) == {"model"}
