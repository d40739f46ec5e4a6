"""The /v2 routes on the API's real server (`python -m serving.server`, granian) with a client no one here
wrote: NVIDIA's `tritonclient[http]` (PyPI). Three models in one API: the churn bundle (the default model,
also served by /predict), a diabetes regression and an image classifier from OIP_MODELS. The examples of
docs/oip.md run here too, as written (only the port differs)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from churnops.contract import load_contract
from ops.localservers import Server, free_port, wait_http
from tests.support.oip_models import churn_rows, image_expected, make_image_model, make_regression_bundle
from tests.support.serving import api_env, wait_ready

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "oip.md"
CHURN = load_contract("bank_churners")
DIABETES = load_contract("diabetes")

httpclient = pytest.importorskip("tritonclient.http", reason="pip install -e .[test] (tritonclient[http])")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory):
    d = tmp_path_factory.mktemp("oip-server")
    diab, reg, enc = make_regression_bundle(d / "diabetes")
    img = make_image_model(d / "image")
    port = free_port()
    env = api_env(
        bundles, d / "state", port, API_WORKERS="1", MODEL_NAME="", OIP_MODELS=f"diabetes={diab},raw_digits={img}"
    )
    srv = Server([sys.executable, "-m", "serving.server"], d / "server.log", env=env, cwd=ROOT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 90, srv.proc, d / "server.log")
        wait_ready(port)
        deadline = time.monotonic() + 60
        while get(port, "/v2/health/ready")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert get(port, "/v2/health/ready")[0] == 200, (d / "server.log").read_text()[-3000:]
        yield {"port": port, "url": f"127.0.0.1:{port}", "reg": reg, "enc": enc, "state": d / "state"}
    finally:
        srv.stop()


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def post_predict(port: int, row: dict) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", json.dumps(row).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def churn_inputs(rows: list[dict], binary: bool) -> list:
    inputs = []
    for name, f in CHURN.features.items():
        numeric = f.kind == "numeric"
        t = httpclient.InferInput(name, [len(rows)], "FP64" if numeric else "BYTES")
        t.set_data_from_numpy(
            np.array([r[name] for r in rows], dtype=np.float64 if numeric else object), binary_data=binary
        )
        inputs.append(t)
    return inputs


def test_health_and_metadata_through_tritonclient(server):
    c = httpclient.InferenceServerClient(url=server["url"])
    assert c.is_server_live() and c.is_server_ready()
    assert c.get_server_metadata()["name"] == "churnops"
    for name in ("churn-xgboost", "diabetes-xgboost", "raw-digits-cnn"):
        assert c.is_model_ready(name), name
    meta = c.get_model_metadata("churn-xgboost")
    assert [i["name"] for i in meta["inputs"]] == CHURN.feature_names
    assert {i["name"]: i["datatype"] for i in meta["inputs"]}["card_category"] == "BYTES"
    assert not c.is_model_ready("nobody")
    with pytest.raises(InferenceServerException, match="'nobody' is not served here"):
        c.get_model_metadata("nobody")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_churn_infer_equals_predict(server, binary):
    c = httpclient.InferenceServerClient(url=server["url"])
    rows = churn_rows(5)
    res = c.infer(
        "churn-xgboost",
        churn_inputs(rows, binary),
        request_id="trt-1",
        outputs=[httpclient.InferRequestedOutput("probability"), httpclient.InferRequestedOutput("prediction")],
    )
    assert res.get_response()["id"] == "trt-1"
    proba = res.as_numpy("probability")
    labels = [x.decode() if isinstance(x, bytes) else x for x in res.as_numpy("prediction").tolist()]
    assert proba.shape == (5,) and res.as_numpy("decision") is None  # not selected
    for i, row in enumerate(rows):
        p = post_predict(server["port"], row)
        assert abs(float(proba[i]) - p["probability"]) < 1e-6
        assert labels[i] == ("Attrited Customer" if p["churn"] else "Existing Customer")


def test_regression_and_image_lines_in_the_same_api(server):
    c = httpclient.InferenceServerClient(url=server["url"])
    rows = [DIABETES.example, {**DIABETES.example, "bmi": 21.0, "s5": 3.9}]
    inputs = []
    for name in DIABETES.feature_names:
        t = httpclient.InferInput(name, [2], "FP64")
        t.set_data_from_numpy(np.array([r[name] for r in rows], dtype=np.float64))
        inputs.append(t)
    got = c.infer("diabetes-xgboost", inputs).as_numpy("prediction")
    want = server["reg"].predict(server["enc"].transform_records(rows))
    assert np.allclose(got, want, atol=1e-3), (got, want)

    px = np.random.default_rng(11).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    t = httpclient.InferInput("image", list(px.shape), "UINT8")
    t.set_data_from_numpy(px)  # binary
    res = c.infer("raw-digits-cnn", [t])
    want = image_expected(px)
    assert np.allclose(res.as_numpy("probabilities"), want, atol=1e-5)
    assert res.as_numpy("class_index").tolist() == want.argmax(1).tolist()


def test_bad_input_through_tritonclient(server):
    c = httpclient.InferenceServerClient(url=server["url"])
    inputs = churn_inputs(churn_rows(1), binary=True)
    wrong = httpclient.InferInput("customer_age", [1], "BYTES")
    wrong.set_data_from_numpy(np.array(["45"], dtype=object))
    inputs[0] = wrong
    with pytest.raises(InferenceServerException) as exc:
        c.infer("churn-xgboost", inputs)
    assert "input 'customer_age': expected datatype FP64 (or FP32/INT64), got BYTES" in str(exc.value)
    assert exc.value.status() == "400"
    with pytest.raises(InferenceServerException) as missing:
        c.infer("churn-xgboost", churn_inputs(churn_rows(1), binary=False)[1:])
    assert "missing input 'customer_age'" in str(missing.value)
    with pytest.raises(InferenceServerException) as unknown:
        c.infer("nobody", inputs)
    assert unknown.value.status() == "404"


def doc_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_docs_examples_run_as_written(server):
    here = server["url"]
    bash = doc_blocks("bash")
    assert len(bash) == 2
    ready = subprocess.run(["bash", "-ec", bash[0].replace("127.0.0.1:9696", here)], capture_output=True, text=True)
    assert ready.returncode == 0 and '"ready":true' in ready.stdout and '"name":"churn-xgboost"' in ready.stdout
    one = subprocess.run(["bash", "-ec", bash[1].replace("127.0.0.1:9696", here)], capture_output=True, text=True)
    answer = json.loads(one.stdout)
    assert answer["id"] == "doc-1" and [o["name"] for o in answer["outputs"]] == ["probability", "prediction"]
    p = post_predict(server["port"], CHURN.example)["probability"]
    assert abs(answer["outputs"][0]["data"][0] - p) < 1e-6
    python = doc_blocks("python")
    assert len(python) == 2
    for code in python:
        run = subprocess.run(
            [sys.executable, "-c", code.replace("127.0.0.1:9696", here)], capture_output=True, text=True, cwd=ROOT
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert "[" in run.stdout


def test_an_oversize_infer_body_is_refused_at_the_edge(server):
    """Above MAX_BODY_BYTES (1 MB here): drained by the edge (serving/edge.py), answered 413 naming the limit."""
    body = b'{"inputs": [' + b" " * 1_500_000 + b"]}"
    req = urllib.request.Request(
        f"http://127.0.0.1:{server['port']}/v2/models/churn-xgboost/infer", body, {"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=20)
    assert exc.value.code == 413
    assert "1000000 byte limit" in json.loads(exc.value.read())["error"]
