"""The Open Inference Protocol routes (serving/oip.py) on Flask's test client: three models of three lines
in one app (the churn bundle as the default model, a diabetes regression and a tiny image classifier from
OIP_MODELS), answers checked against /predict and against the models' own predictors, every bad input
answered 4xx naming it. tests/serving/test_oip_server.py runs the real server with tritonclient."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

import numpy as np
import pytest

from churnops.contract import load_contract
from churnops.store.sqlite import SQLiteStore
from tests.support.oip_models import churn_rows, image_expected, make_image_model, make_regression_bundle
from tests.support.serving import local_model_set

CHURN = load_contract("bank_churners")
# what the session's stack_env may have set that would name another default model
LINE_ENV = ("MODEL_NAME", "EXPERIMENT_NAME", "TRAINING_DEPLOYMENT", "DATASET", "RUN_ID", "MODEL_URI")
DIABETES = load_contract("diabetes")


def tensors(contract, rows: list[dict], numeric: str = "FP64") -> list[dict]:
    """One tensor per contract feature, shape [n], from records."""
    return [
        {
            "name": n,
            "datatype": numeric if f.kind == "numeric" else "BYTES",
            "shape": [len(rows)],
            "data": [r[n] for r in rows],
        }
        for n, f in contract.features.items()
    ]


@contextmanager
def started_app(s, store, current, manager_settings=None):
    """(app, state, served) of an app on settings `s` serving `current` (a ModelSet; its manager on
    `manager_settings`, default `s`) as the default model plus `s.oip_models`, its log and the extra models'
    loaders started and every model ready; all closed afterwards."""
    from serving.app import create_app
    from serving.model import ModelManager

    mm = ModelManager(manager_settings or s)
    mm.current = current
    app = create_app(s, store=store, models=mm, start_background=False)
    state, served = app.extensions["churn"], app.extensions["oip"]
    state.plog.start()
    served.start()  # the extra models load from their folders in the background
    try:
        deadline = time.monotonic() + 60
        while not served.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served.ready, {m.name: m.models.last_error for m in served.extras()}
        yield app, state, served
    finally:
        served.close()
        state.shadow.stop()
        state.plog.close()


@pytest.fixture(scope="module")
def v2(bundles, tmp_path_factory):
    """(client, served models, extra info): churn bundle `a` as the default, diabetes and raw_digits listed."""
    from churnops.settings import Settings

    d = tmp_path_factory.mktemp("oip")
    diab, reg, enc = make_regression_bundle(d / "diabetes")
    img = make_image_model(d / "image")
    with pytest.MonkeyPatch.context() as mp:
        for k in ("PROMETHEUS_MULTIPROC_DIR", *LINE_ENV):
            mp.delenv(k, raising=False)
        s = Settings(
            _env_file=None,
            state_dir=d / "state",
            log_flush_interval_s=0.05,
            max_body_bytes=200_000,
            batch_row_limit=50,
            mlflow_tracking_uri="http://127.0.0.1:9",
            oip_models=f"diabetes={diab},raw_digits={img}",
        )
        store = SQLiteStore(d / "state" / "predictions.db")
        with started_app(s, store, local_model_set(bundles)) as (app, state, served):
            yield {
                "app": app,
                "client": app.test_client(),
                "served": served,
                "state": state,
                "reg": reg,
                "enc": enc,
                "dir": d,
            }
        store.close()


def infer(client, model: str, body, version: str | None = None, **kw):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", **kw)


def outputs(resp) -> dict:
    return {o["name"]: o for o in resp.json["outputs"]}


def polled(path, keep, n: int = 1, wait_s: float = 10.0) -> list[dict]:
    """The records `keep` accepts in the store at `path`, once at least `n` are in (or `wait_s` passed)."""
    store = SQLiteStore(path)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            recs = [r for r in store.find_predictions(None, None, 1000) if keep(r)]
            if len(recs) >= n or time.monotonic() > deadline:
                return recs
            time.sleep(0.05)
    finally:
        store.close()


def logged(path, model_name: str, wait_s: float = 10.0) -> list[dict]:
    """The records of `model_name` in the store at `path`, once the log has flushed some."""
    return polled(path, lambda r: r.get("model_name") == model_name, wait_s=wait_s)


# ---- health and metadata ---------------------------------------------------------------------------------


def test_health_and_server_metadata(v2):
    c = v2["client"]
    assert c.get("/v2/health/live").json == {"live": True}
    r = c.get("/v2/health/ready")
    assert r.status_code == 200 and r.json["ready"] is True
    assert set(r.json["models"]) == {"churn-xgboost", "diabetes-xgboost", "raw-digits-cnn"}
    meta = c.get("/v2").json
    assert meta["name"] == "churnops" and "binary_tensor_data" in meta["extensions"] and meta["version"]


def test_model_metadata_follows_each_contract(v2):
    c = v2["client"]
    churn = c.get("/v2/models/churn-xgboost").json
    inputs = {i["name"]: (i["datatype"], i["shape"]) for i in churn["inputs"]}
    assert list(inputs) == CHURN.feature_names
    assert inputs["customer_age"] == ("FP64", [-1]) and inputs["gender"] == ("BYTES", [-1])
    assert inputs["education_level"][0] == "BYTES"  # an ordinal feature: its categories as text
    assert {o["name"]: o["datatype"] for o in churn["outputs"]} == {
        "probability": "FP64",
        "prediction": "BYTES",
        "decision": "INT64",
        "explanations": "BYTES",  # answered only when `outputs` names it
    }
    diab = c.get("/v2/models/diabetes-xgboost").json
    assert [i["name"] for i in diab["inputs"]] == DIABETES.feature_names
    assert {i["datatype"] for i in diab["inputs"]} == {"FP64"}
    assert [(o["name"], o["datatype"]) for o in diab["outputs"]] == [("prediction", "FP64"), ("explanations", "BYTES")]
    img = c.get("/v2/models/raw-digits-cnn").json
    assert img["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 32, 32, 3]}]
    assert {o["name"]: o["shape"] for o in img["outputs"]} == {
        "class": [-1],
        "class_index": [-1],
        "probabilities": [-1, 10],
    }
    assert c.get("/v2/models/raw-digits-cnn/ready").json == {"name": "raw-digits-cnn", "ready": True}


# ---- answers -----------------------------------------------------------------------------------------------


def test_churn_infer_equals_predict_and_is_logged(v2):
    c = v2["client"]
    rows = churn_rows(4)
    r = infer(c, "churn-xgboost", {"id": "req-1", "inputs": tensors(CHURN, rows)})
    assert r.status_code == 200, r.json
    assert r.json["id"] == "req-1" and r.json["model_name"] == "churn-xgboost"
    out = outputs(r)
    assert out["probability"]["shape"] == [4] and out["probability"]["datatype"] == "FP64"
    for i, row in enumerate(rows):
        p = c.post("/predict", json=row).json
        assert abs(out["probability"]["data"][i] - p["probability"]) < 1e-6
        assert out["decision"]["data"][i] == p["decision"]
        want = "Attrited Customer" if p["decision"] else "Existing Customer"
        assert out["prediction"]["data"][i] == want
    ids = r.json["parameters"]["request_ids"]
    recs = {x["request_id"]: x for x in logged(v2["dir"] / "state" / "predictions.db", "churn-xgboost")}
    assert set(ids) <= set(recs)
    rec = recs[ids[2]]
    assert rec["protocol"] == "v2" and rec["features"]["customer_age"] == 32
    assert abs(rec["probability"] - out["probability"]["data"][2]) < 1e-9


def test_fp32_int64_and_nested_data_are_accepted(v2):
    c = v2["client"]
    rows = churn_rows(2)
    ref = outputs(infer(c, "churn-xgboost", {"inputs": tensors(CHURN, rows)}))["probability"]["data"]
    ins = tensors(CHURN, rows, numeric="FP32")
    for t in ins:
        if t["name"] in ("customer_age", "months_on_book"):
            t["datatype"] = "INT64"
        t["shape"] = [2, 1]
        t["data"] = [[x] for x in t["data"]]
    r = infer(c, "churn-xgboost", {"inputs": ins})
    assert r.status_code == 200, r.json
    assert np.allclose(outputs(r)["probability"]["data"], ref, atol=1e-6)


def test_outputs_selection_and_request_ids(v2):
    c = v2["client"]
    body = {
        "inputs": tensors(CHURN, churn_rows(2)),
        "outputs": [{"name": "probability"}],
        "parameters": {"request_ids": ["cust-a", "cust-b"]},
    }
    r = infer(c, "churn-xgboost", body)
    assert [o["name"] for o in r.json["outputs"]] == ["probability"]
    assert r.json["parameters"]["request_ids"] == ["cust-a", "cust-b"]
    one = infer(c, "churn-xgboost", {"id": "cust-c", "inputs": tensors(CHURN, churn_rows(1))})
    assert one.json["parameters"]["request_ids"] == ["cust-c"]  # a one-row request's id names its row


def test_version_route_answers_the_loaded_version_only(v2):
    served = v2["served"].get("churn-xgboost")
    champ = served.models.current.champion
    old = champ.version
    champ.version = "7"  # a registered version (local bundles have none)
    try:
        c = v2["client"]
        assert c.get("/v2/models/churn-xgboost").json["versions"] == ["7"]
        r = infer(c, "churn-xgboost", {"inputs": tensors(CHURN, churn_rows(1))}, version="7")
        assert r.status_code == 200 and r.json["model_version"] == "7"
        assert c.get("/v2/models/churn-xgboost/versions/7/ready").status_code == 200
        bad = infer(c, "churn-xgboost", {"inputs": tensors(CHURN, churn_rows(1))}, version="3")
        assert bad.status_code == 404 and "version '3'" in bad.json["error"] and "['7']" in bad.json["error"]
        assert c.get("/v2/models/churn-xgboost/versions/3").status_code == 404
        assert c.get("/v2/models/churn-xgboost/versions/3/ready").status_code == 404
    finally:
        champ.version = old


def test_regression_line_answers_xgboosts_value_into_its_own_store(v2):
    c = v2["client"]
    rows = [dict(DIABETES.example), {**DIABETES.example, "bmi": 22.5, "age": 40}]
    r = infer(c, "diabetes-xgboost", {"inputs": tensors(DIABETES, rows)})
    assert r.status_code == 200, r.json
    got = outputs(r)["prediction"]["data"]
    X = v2["enc"].transform_records(rows)
    want = v2["reg"].predict(X)
    assert np.allclose(got, want, atol=1e-3), (got, want)
    ids = r.json["parameters"]["request_ids"]
    line_db = v2["dir"] / "state" / "lines" / "diabetes" / "predictions.db"
    recs = {x["request_id"]: x for x in logged(line_db, "diabetes-xgboost")}
    assert set(ids) <= set(recs) and abs(recs[ids[1]]["prediction"] - got[1]) < 1e-9
    default = logged(v2["dir"] / "state" / "predictions.db", "diabetes-xgboost", wait_s=0.3)
    assert default == []  # never in the churn line's store


def test_image_line_classifies_pixels_into_its_own_store(v2):
    c = v2["client"]
    px = np.random.default_rng(3).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    body = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [3, 32, 32, 3], "data": px.ravel().tolist()}]}
    r = infer(c, "raw-digits-cnn", body)
    assert r.status_code == 200, r.json
    out = outputs(r)
    want = image_expected(px)
    assert out["probabilities"]["shape"] == [3, 10]
    assert np.allclose(np.array(out["probabilities"]["data"]).reshape(3, 10), want, atol=1e-5)
    assert out["class_index"]["data"] == want.argmax(1).tolist()
    assert out["class"]["data"] == [str(i) for i in want.argmax(1)]
    ids = r.json["parameters"]["request_ids"]
    recs = {
        x["request_id"]: x
        for x in logged(v2["dir"] / "state" / "lines" / "raw_digits" / "predictions.db", "raw-digits-cnn")
    }
    assert set(ids) <= set(recs)
    rec = recs[ids[0]]
    assert rec["predicted_class"] == str(want[0].argmax()) and rec["features"]["width"] == 32
    assert "thumbnail_png" in rec["features"] and "data" not in rec["features"]  # a summary, not the pixels


# ---- bad input -------------------------------------------------------------------------------------------


def churn_body(**edit) -> dict:
    """A valid one-row churn request with `edit` applied to its tensors by name (None: dropped)."""
    ins = []
    for t in tensors(CHURN, churn_rows(1)):
        change = edit.get(t["name"], {})
        if change is None:
            continue
        ins.append({**t, **change})
    return {"inputs": ins}


@pytest.mark.parametrize(
    "body, status, words",
    [
        (
            churn_body(customer_age={"datatype": "BYTES", "data": ["45"]}),
            400,
            ["input 'customer_age': expected datatype FP64 (or FP32/INT64), got BYTES"],
        ),
        (
            churn_body(gender={"datatype": "FP64", "data": [1.0]}),
            400,
            ["input 'gender'", "expected datatype BYTES", "FP64"],
        ),
        (churn_body(gender=None), 400, ["missing input 'gender'", "BYTES"]),
        (
            churn_body(customer_age={"shape": [1, 2], "data": [45, 46]}),
            400,
            ["input 'customer_age'", "shape [n]", "[1, 2]"],
        ),
        (
            churn_body(customer_age={"shape": [2], "data": [45]}),
            400,
            ["input 'customer_age'", "shape [2]", "data has 1"],
        ),
        (
            churn_body(customer_age={"shape": [2], "data": [45, 46]}),
            400,
            ["input 'customer_age'", "2 rows", "the other inputs have 1"],
        ),
        (churn_body(customer_age={"data": ["45"]}), 400, ["input 'customer_age'", "element 0", "takes numbers"]),
        (churn_body(customer_age={"data": [7]}), 400, ["input 'customer_age' row 0", "18"]),
        (churn_body(gender={"data": ["X"]}), 400, ["input 'gender' row 0"]),
        (churn_body(customer_age={"datatype": "FP128"}), 400, ["input 'customer_age'", "datatype 'FP128'"]),
        (
            {
                "inputs": [
                    *churn_body()["inputs"],
                    {"name": "age_of_customer", "datatype": "FP64", "shape": [1], "data": [1]},
                ]
            },
            400,
            ["input 'age_of_customer'", "not an input of model 'churn-xgboost'"],
        ),
        ({**churn_body(), "outputs": [{"name": "explanation"}]}, 400, ["output 'explanation'", "probability"]),
        ({"inputs": []}, 400, ["inputs"]),
        ({"id": 5, **churn_body()}, 400, ["id"]),
        ("{not json", 400, ["not valid JSON"]),
        ("", 400, ["empty body"]),
        ("[1, 2]", 400, ["expected a JSON object"]),
    ],
)
def test_bad_input_is_a_4xx_naming_it(v2, body, status, words):
    r = infer(v2["client"], "churn-xgboost", body)
    assert r.status_code == status, r.json
    assert set(r.json) == {"error"}
    for w in words:
        assert w in r.json["error"], (w, r.json["error"])


def test_image_bad_inputs(v2):
    c = v2["client"]
    px = [0] * (32 * 32 * 3)
    cases = [
        (
            {"name": "image", "datatype": "FP32", "shape": [1, 32, 32, 3], "data": px},
            "expected datatype UINT8, got FP32",
        ),
        ({"name": "image", "datatype": "UINT8", "shape": [1, 3, 32, 32], "data": px}, "expected shape [n, 32, 32, 3]"),
        ({"name": "img", "datatype": "UINT8", "shape": [1, 32, 32, 3], "data": px}, "input 'img': not an input"),
        ({"name": "image", "datatype": "UINT8", "shape": [1, 32, 32, 3], "data": [256] + px[1:]}, "does not fit"),
    ]
    for tensor, words in cases:
        r = infer(c, "raw-digits-cnn", {"inputs": [tensor]})
        assert r.status_code == 400 and words in r.json["error"], (words, r.json)


def test_unknown_model_and_version_are_404(v2):
    c = v2["client"]
    for path in ("/v2/models/nobody", "/v2/models/nobody/ready"):
        r = c.get(path)
        assert r.status_code == 404 and "'nobody'" in r.json["error"] and "churn-xgboost" in r.json["error"]
    assert infer(c, "nobody", churn_body()).status_code == 404
    assert infer(c, "diabetes-xgboost", churn_body(), version="2").status_code == 404  # local bundle: no versions


def test_a_model_not_loaded_is_503_and_not_ready(v2):
    c = v2["client"]
    served = v2["served"].get("diabetes-xgboost")
    ms, served.models.current = served.models.current, None
    served.models.last_error = "ModelLoadError: registry down (test)"
    try:
        r = infer(c, "diabetes-xgboost", {"inputs": tensors(DIABETES, [DIABETES.example])})
        assert r.status_code == 503 and "not ready" in r.json["error"] and "registry down" in r.json["error"]
        rd = c.get("/v2/models/diabetes-xgboost/ready")
        assert rd.status_code == 503 and rd.json["ready"] is False
        health = c.get("/v2/health/ready")
        assert health.status_code == 503 and health.json["models"]["diabetes-xgboost"] is False
        assert c.get("/v2/models/diabetes-xgboost").status_code == 200  # metadata comes from the contract
    finally:
        served.models.current = ms
        served.models.last_error = None


def test_oversize_body_is_413(v2):
    r = infer(v2["client"], "churn-xgboost", b'{"inputs": [' + b" " * 250_000 + b"]}")
    assert r.status_code == 413 and "200000 byte limit" in r.json["error"]


def test_batch_row_limit(v2):
    r = infer(v2["client"], "churn-xgboost", {"inputs": tensors(CHURN, churn_rows(51))})
    assert r.status_code == 413 and "51 rows > limit 50" in r.json["error"]


def test_unknown_oip_models_entry_refuses_to_start(tmp_path):
    from churnops.settings import Settings
    from serving.oip_models import OipConfigError, parse_entries

    s = Settings(_env_file=None, state_dir=tmp_path)
    with pytest.raises(OipConfigError, match="'nobody' is no data set or model name"):
        parse_entries("diabetes,nobody", s)
    with pytest.raises(OipConfigError, match="not accepted"):
        parse_entries("diabetes:latest", s)
    assert [(e.name, e.uri) for e in parse_entries("diabetes-xgboost:3, raw_digits@challenger", s)] == [
        ("diabetes-xgboost", "models:/diabetes-xgboost/3"),
        ("raw-digits-cnn", "models:/raw-digits-cnn@challenger"),
    ]


def test_server_start_forgets_the_reloads_of_every_served_line(tmp_path):
    """A reload from a previous run (serving-model.json) is forgotten at start for the OIP_MODELS lines too,
    not only the default's: a restarted server serves each line's pinned model again."""
    from churnops.settings import Settings
    from serving.model import shared_state_file
    from serving.oip_models import clear_served_state, line_settings, parse_entries

    s = Settings(_env_file=None, state_dir=tmp_path, oip_models="diabetes,raw_digits")
    files = [shared_state_file(s)] + [shared_state_file(line_settings(s, e)) for e in parse_entries(s.oip_models, s)]
    assert len(set(files)) == 3  # each line has its own
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text('{"uri": "models:/x/1"}')
    clear_served_state(s)
    assert [f.exists() for f in files] == [False, False, False]
    bad = Settings(_env_file=None, state_dir=tmp_path / "bad", oip_models="nobody")
    shared_state_file(bad).parent.mkdir(parents=True, exist_ok=True)
    shared_state_file(bad).write_text("{}")
    clear_served_state(bad)  # an unknown entry: the default line's is still cleared; the app names the entry
    assert not shared_state_file(bad).exists()


def shadow_rows(path, wait_s: float = 10.0, n: int = 1) -> dict[str, dict]:
    """The `shadow` records in the store at `path` by request id, once at least `n` are in."""
    return {r["request_id"]: r for r in polled(path, lambda r: r["route"] == "shadow", n, wait_s)}


def test_shadow_mirrors_v2_answers_into_each_lines_store(bundles, tmp_path, monkeypatch):
    """SHADOW_FRACTION=1: what a line's champion answers under /v2 is mirrored to that line's candidate and
    logged as route `shadow` in that line's store, under the answer's request id; the answer is unchanged."""
    from churnops.settings import Settings
    from serving.model import load_model

    for k in ("PROMETHEUS_MULTIPROC_DIR", *LINE_ENV):
        monkeypatch.delenv(k, raising=False)
    diab, reg, enc = make_regression_bundle(tmp_path / "diabetes")
    s = Settings(
        _env_file=None,
        state_dir=tmp_path / "state",
        log_flush_interval_s=0.05,
        mlflow_tracking_uri="http://127.0.0.1:9",
        oip_models=f"diabetes={diab}",
        shadow_fraction=1.0,
    )
    store = SQLiteStore(tmp_path / "state" / "predictions.db")
    with started_app(s, store, local_model_set(bundles)) as (app, state, served):
        churn_candidate = load_model(str(bundles["b"]), "shadow")
        state.shadow.load_candidate = lambda champion: churn_candidate
        line = served.get("diabetes-xgboost")
        diabetes_candidate = load_model(str(diab), "shadow", line.settings)
        line.shadow.load_candidate = lambda champion: diabetes_candidate
        c = app.test_client()
        rows = churn_rows(3)
        r = infer(c, "churn-xgboost", {"inputs": tensors(CHURN, rows)})
        assert r.status_code == 200, r.json
        answered = dict(zip(r.json["parameters"]["request_ids"], outputs(r)["probability"]["data"]))
        want = churn_candidate.bundle.predict_records(rows).tolist()  # bundle b, not the champion a
        drows = [dict(DIABETES.example), {**DIABETES.example, "bmi": 22.5}]
        rd = infer(c, "diabetes-xgboost", {"inputs": tensors(DIABETES, drows)})
        assert rd.status_code == 200, rd.json
        assert state.shadow.drain() and line.shadow.drain()
        churn = shadow_rows(tmp_path / "state" / "predictions.db", n=3)
        assert sorted(churn) == sorted(answered)  # every answer, under its request id
        assert np.allclose([churn[i]["probability"] for i in answered], want, atol=1e-6)
        assert not np.allclose(list(answered.values()), want, atol=1e-3)  # the champion answered, not the candidate
        diabetes = shadow_rows(tmp_path / "state" / "lines" / "diabetes" / "predictions.db", n=2)
        assert sorted(diabetes) == sorted(rd.json["parameters"]["request_ids"])
        got = [diabetes[i]["prediction"] for i in rd.json["parameters"]["request_ids"]]
        assert np.allclose(got, reg.predict(enc.transform_records(drows)), atol=1e-3)
        assert not set(diabetes) & set(shadow_rows(tmp_path / "state" / "predictions.db", wait_s=0))
    store.close()


def test_openapi_documents_every_v2_route(v2):
    spec = v2["client"].get("/openapi.json").json
    routes = {
        (r.rule.replace("<", "{").replace(">", "}"), m.lower())
        for r in v2["app"].url_map.iter_rules()
        if r.rule.startswith("/v2")
        for m in r.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(p, m) for p, ops in spec["paths"].items() if p.startswith("/v2") for m in ops}
    assert len(routes) == 9 and routes == documented


def test_one_features_tensor_equals_the_per_feature_tensors(v2):
    c = v2["client"]
    rows = [dict(DIABETES.example), {**DIABETES.example, "bmi": 22.5, "age": 40}]
    per_feature = outputs(infer(c, "diabetes-xgboost", {"inputs": tensors(DIABETES, rows)}))["prediction"]["data"]
    k = len(DIABETES.feature_names)
    matrix = [[r[n] for n in DIABETES.feature_names] for r in rows]
    one = {"name": "features", "datatype": "FP64", "shape": [2, k], "data": matrix}
    assert outputs(infer(c, "diabetes-xgboost", {"inputs": [one]}))["prediction"]["data"] == per_feature
    meta = c.get("/v2/models/diabetes-xgboost").json["parameters"]["matrix_input"]
    assert meta == {"name": "features", "datatype": "FP64", "shape": [-1, k], "columns": DIABETES.feature_names}

    churn = churn_rows(2)
    ref = outputs(infer(c, "churn-xgboost", {"inputs": tensors(CHURN, churn)}))["probability"]["data"]
    text = [[str(r[n]) for n in CHURN.feature_names] for r in churn]  # a mixed contract: every value as text
    kc = len(CHURN.feature_names)
    got = infer(
        c, "churn-xgboost", {"inputs": [{"name": "features", "datatype": "BYTES", "shape": [2, kc], "data": text}]}
    )
    assert got.status_code == 200, got.json
    assert np.allclose(outputs(got)["probability"]["data"], ref, atol=1e-9)
    numbers = {"name": "features", "datatype": "FP64", "shape": [1, kc], "data": [0.0] * kc}
    bad = infer(c, "churn-xgboost", {"inputs": [numbers]})
    assert bad.status_code == 400 and "input 'features': expected datatype BYTES" in bad.json["error"]
    short = {"name": "features", "datatype": "FP64", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}
    bad = infer(c, "diabetes-xgboost", {"inputs": [short]})
    assert bad.status_code == 400 and f"expected shape [n, {k}]" in bad.json["error"]
    text[0][0] = "old"
    bad = infer(
        c, "churn-xgboost", {"inputs": [{"name": "features", "datatype": "BYTES", "shape": [2, kc], "data": text}]}
    )
    assert bad.status_code == 400 and "input 'customer_age' row 0" in bad.json["error"]


def feedback_in(path, request_id: str, wait_s: float = 10.0) -> list[dict]:
    store = SQLiteStore(path)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            got = store.find_feedback([request_id])
            if got or time.monotonic() > deadline:
                return got
            time.sleep(0.05)
    finally:
        store.close()


def test_feedback_naming_a_v2_model_lands_in_its_line(v2):
    """A label for a /v2 prediction of another line goes to that line's store (its realized quality),
    parsed by its task: a regression takes the observed value."""
    c = v2["client"]
    body = {"inputs": tensors(DIABETES, [DIABETES.example]), "parameters": {"request_ids": ["patient-7"]}}
    assert infer(c, "diabetes-xgboost", body).status_code == 200
    r = c.post("/feedback", json={"request_id": "patient-7", "model": "diabetes-xgboost", "value": 151.0})
    assert r.status_code == 202 and r.json["value"] == 151.0
    line_db = v2["dir"] / "state" / "lines" / "diabetes" / "predictions.db"
    assert [f["outcome"] for f in feedback_in(line_db, "patient-7")] == [151.0]
    assert feedback_in(v2["dir"] / "state" / "predictions.db", "patient-7", wait_s=0.3) == []
    bad = c.post("/feedback", json={"request_id": "patient-7", "model": "diabetes-xgboost", "outcome": "yes"})
    assert bad.status_code == 422 and "outcome" in bad.json["details"]
    unknown = c.post("/feedback", json={"request_id": "patient-7", "model": "nobody", "value": 1})
    assert unknown.status_code == 422 and "churn-xgboost" in unknown.json["details"]["model"]
    churn = c.post("/feedback", json={"request_id": "cust-a", "model": "churn-xgboost", "outcome": 1})
    assert churn.status_code == 202  # the default model: /predict's own log
    assert [f["outcome"] for f in feedback_in(v2["dir"] / "state" / "predictions.db", "cust-a")] == [1]


def test_an_image_server_serves_the_churn_line_under_v2(bundles, tmp_path, monkeypatch):
    """DATASET=raw_digits as the default model, churn listed: each model reads and writes its own line
    (the image line under lines/raw_digits/, churn in the stack's default store), never the other's."""
    from churnops.model_line import for_dataset
    from churnops.settings import Settings
    from serving.model import ModelSet, load_model
    from serving.oip_models import line_settings, parse_entries

    for k in ("PROMETHEUS_MULTIPROC_DIR", *LINE_ENV):
        monkeypatch.delenv(k, raising=False)
    img = make_image_model(tmp_path / "image")
    s = Settings(
        _env_file=None,
        dataset="raw_digits",
        state_dir=tmp_path / "state",
        log_flush_interval_s=0.05,
        mlflow_tracking_uri="http://127.0.0.1:9",
        oip_models=f"churn-xgboost={bundles['a']}",
    )
    line = for_dataset(s)
    churn_line = line_settings(line, parse_entries(s.oip_models, line)[0])
    assert churn_line.prediction_db_path is None and churn_line.mongodb_db == "churn"  # the stack's defaults
    assert churn_line.spool_dir is None and churn_line.serving_state_file is None
    store = SQLiteStore(tmp_path / "state" / "lines" / "raw_digits" / "predictions.db")
    with started_app(s, store, ModelSet(load_model(str(img), "champion", line)), line) as (app, state, served):
        c = app.test_client()
        assert sorted(c.get("/v2/health/ready").json["models"]) == ["churn-xgboost", "raw-digits-cnn"]
        r = infer(c, "churn-xgboost", {"inputs": tensors(CHURN, churn_rows(1))})
        assert r.status_code == 200, r.json
        px = np.zeros((1, 32, 32, 3), dtype=np.uint8)
        body = {
            "inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 32, 32, 3], "data": px.ravel().tolist()}]
        }
        ri = infer(c, "raw-digits-cnn", body)
        assert ri.status_code == 200 and outputs(ri)["class_index"]["data"] == image_expected(px).argmax(1).tolist()
        assert c.post("/predict", json=churn_rows(1)[0]).status_code == 409  # /predict is the default (image) model's
        churn_ids = r.json["parameters"]["request_ids"]
        assert {x["request_id"] for x in logged(tmp_path / "state" / "predictions.db", "churn-xgboost")} == set(
            churn_ids
        )
        image_db = tmp_path / "state" / "lines" / "raw_digits" / "predictions.db"
        assert [x["request_id"] for x in logged(image_db, "raw-digits-cnn")] == ri.json["parameters"]["request_ids"]
    store.close()


def test_explanations_output_equals_predict_explain(v2):
    """`explanations` is computed only when asked for; per row the same JSON as /predict?explain=true."""
    c = v2["client"]
    rows = churn_rows(3)
    plain = outputs(infer(c, "churn-xgboost", {"inputs": tensors(CHURN, rows)}))
    assert "explanations" not in plain
    r = infer(c, "churn-xgboost", {"inputs": tensors(CHURN, rows), "outputs": [{"name": "explanations"}]})
    assert r.status_code == 200, r.json
    out = outputs(r)["explanations"]
    assert out["datatype"] == "BYTES" and out["shape"] == [3]
    for i, row in enumerate(rows):
        got = json.loads(out["data"][i])
        want = c.post("/predict?explain=true", json=row).json["explanation"]
        assert got.keys() == want.keys()
        for name, value in want["contributions"].items():
            assert abs(got["contributions"][name] - value) < 1e-9
        assert [t["feature"] for t in got["top"]] == [t["feature"] for t in want["top"]]


def test_explanations_refused_for_the_image_model_and_over_the_row_limit(v2):
    c = v2["client"]
    pixels = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    body = {
        "inputs": [
            {"name": "image", "datatype": "UINT8", "shape": list(pixels.shape), "data": pixels.ravel().tolist()}
        ],
        "outputs": [{"name": "explanations"}],
    }
    r = infer(c, "raw-digits-cnn", body)
    assert r.status_code == 422 and "cannot explain" in r.json["error"], r.json
    many = churn_rows(1) * 101
    r = infer(c, "churn-xgboost", {"inputs": tensors(CHURN, many), "outputs": [{"name": "explanations"}]})
    assert r.status_code == 413 and "EXPLAIN_MAX_ROWS" in r.json["error"], r.json
