"""Image serving: POST /predict/image, the bad-input matrix, logging, and image_uri stream records.

A small CNN is trained on the session's 300 raw digits and registered on the test MLflow server
(module fixture `image_model` of tests/image/conftest.py); the servers load it from the registry as they load a tabular model.
Expected classes are computed independently: the dataset loader (`load_image`, from the file on
disk) and the ONNX bytes the fixture exported, never the serving code.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import uuid

import numpy as np
import pytest

pytest.importorskip("torch", reason="the image extra is not installed (pip install -e .[image])")
pytest.importorskip("rawpy", reason="the image extra is not installed (pip install -e .[image])")

from churnops.image.dataset import load_image  # noqa: E402
from tests.support.serving import read_answer  # noqa: E402


def expected(image_model, x: np.ndarray) -> np.ndarray:
    """Probabilities of the exported ONNX model on (3, H, W) input, computed here."""
    from churnops.image.model import onnx_proba, onnx_session

    return onnx_proba(onnx_session(image_model["onnx"]), x[None])[0]


@pytest.fixture(scope="module")
def served(image_model):
    """(app, client, store) of an image server with the registered champion loaded and its log running."""
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager

    s = image_model["settings"]
    mm = ModelManager(s)
    mm.load_initial()
    store = SQLiteStore(s.state_dir / "predictions.db")
    app = create_app(s, store=store, models=mm, start_background=False)
    plog = app.extensions["churn"].plog
    plog.start()
    yield app, app.test_client(), store
    plog.close()


def dng(image_model, i: int = 0):
    f = image_model["files"][i]
    return f, f.path.read_bytes()


def png_of(x: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(x.transpose(1, 2, 0) * 255).astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


def bggr(data: bytes) -> bytes:
    """The same DNG with its CFAPattern tag rewritten to B G / G R."""
    tag = struct.pack("<HHI", 33422, 1, 4)
    assert data.count(tag + bytes([0, 1, 1, 2])) == 1
    return data.replace(tag + bytes([0, 1, 1, 2]), tag + bytes([2, 1, 1, 0]))


def test_model_name_follows_an_image_contract(pristine_env):
    from churnops.model_line import for_dataset
    from churnops.settings import Settings

    assert for_dataset(Settings(_env_file=None, dataset="raw_digits")).model_name == "raw-digits-cnn"
    assert for_dataset(Settings(_env_file=None)).model_name == "churn-xgboost"


def test_predict_image_dng_png_jpeg_multipart(served, image_model, raw_contract):
    _, c, _ = served
    f, data = dng(image_model, 3)
    x = load_image(f.path, raw_contract)  # the training loader, from the file
    want = expected(image_model, x)
    r = c.post("/predict/image", data=data, headers={"Content-Type": "image/x-adobe-dng", "X-Request-ID": "img-1"})
    assert r.status_code == 200, r.json
    b = r.json
    assert b["request_id"] == "img-1" and b["model_version"] == image_model["version"]
    assert b["model_run_id"] == image_model["run_id"] and b["model_name"] == image_model["settings"].model_name
    assert list(b["probabilities"]) == raw_contract.classes
    assert np.allclose([b["probabilities"][k] for k in raw_contract.classes], want, atol=1e-5)
    assert b["class"] == raw_contract.classes[int(want.argmax())] and b["class_index"] == int(want.argmax())
    # the same file as a multipart upload (part type from the file's bytes): the same answer
    m = c.post(
        "/predict/image?request_id=img-2",
        data={"file": (io.BytesIO(data), "digit.dng", "application/octet-stream")},
        content_type="multipart/form-data",
    )
    assert m.status_code == 200 and m.json["request_id"] == "img-2"
    assert m.json["probabilities"] == b["probabilities"]
    # PNG of the ISP output (8-bit) skips the ISP: the model's answer on the quantised pixels
    p = png_of(x)
    want_png = expected(image_model, np.round(x * 255) / 255)
    r = c.post("/predict/image", data=p, headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and np.allclose(list(r.json["probabilities"].values()), want_png, atol=1e-5)
    j = c.post("/predict/image", data=png_of(x, "JPEG"), headers={"Content-Type": "image/jpeg"})
    assert j.status_code == 200 and abs(sum(j.json["probabilities"].values()) - 1) < 1e-5


@pytest.mark.parametrize(
    "case,status,reason,names",
    [
        ("not_an_image", 422, "not_an_image", "17 bytes that are not a image/png image"),
        ("truncated_dng", 422, "unreadable_image", "truncated or corrupt raw data"),
        ("bggr_dng", 422, "unsupported_raw", "CFA pattern BGGR not supported"),
        ("wrong_size_png", 422, "wrong_size", "image is 40x24; contract raw_digits expects 32x32"),
        ("truncated_png", 422, "unreadable_image", "not a readable PNG image"),
        ("missing_content_type", 415, "unsupported_media_type", "send the image with Content-Type"),
        ("json_content_type", 415, "unsupported_media_type", "'application/json' is not one of"),
        ("mismatch", 415, "content_type_mismatch", "declared image/png but the bytes are image/x-adobe-dng"),
        ("empty", 400, "empty_body", "got 0 bytes"),
        ("multipart_no_file", 422, "no_file", "send one file part"),
        ("bad_request_id", 422, "invalid_request_id", "reserved"),
    ],
)
def test_bad_input_matrix(served, image_model, case, status, reason, names):
    from serving.metrics import get_metrics

    app, c, store = served
    _, data = dng(image_model)
    png = png_of(np.zeros((3, 32, 32), np.float32))
    body, headers, kw = {
        "not_an_image": (b"hello, not pixels", {"Content-Type": "image/png"}, {}),
        "truncated_dng": (data[: len(data) // 2], {"Content-Type": "image/x-adobe-dng"}, {}),
        "bggr_dng": (bggr(data), {"Content-Type": "image/x-adobe-dng"}, {}),
        "wrong_size_png": (png_of(np.zeros((3, 24, 40), np.float32)), {"Content-Type": "image/png"}, {}),
        "truncated_png": (png[: len(png) - 30], {"Content-Type": "image/png"}, {}),
        "missing_content_type": (data, {}, {}),
        "json_content_type": (data, {"Content-Type": "application/json"}, {}),
        "mismatch": (data, {"Content-Type": "image/png"}, {}),
        "empty": (b"", {"Content-Type": "image/x-adobe-dng"}, {}),
        "multipart_no_file": ({"request_id": "x"}, {}, {"content_type": "multipart/form-data"}),
        "bad_request_id": (data, {"Content-Type": "image/x-adobe-dng", "X-Request-ID": "stream:0:x:1"}, {}),
    }[case]
    before = get_metrics().rejections.labels("http", reason)._value.get()
    app.extensions["churn"].plog.flush()  # what earlier tests logged
    n_logged = store.count_predictions()
    r = c.post("/predict/image", data=body, headers=headers, **kw)
    assert r.status_code == status, r.json
    assert r.json["error"] and names in json.dumps(r.json["details"]), r.json
    assert get_metrics().rejections.labels("http", reason)._value.get() == before + 1
    app.extensions["churn"].plog.flush()
    assert store.count_predictions() == n_logged  # nothing logged for a refused image


class CountingInput(io.RawIOBase):
    """A 50 MB request body that counts the bytes the server reads."""

    def __init__(self, size: int):
        self.size, self.read_bytes = size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:  # the test client measures the stream
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: getattr(self, "pos", 0) + offset, 2: self.size + offset}[whence]
        return self.pos

    def tell(self) -> int:
        return getattr(self, "pos", 0)

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self.size - self.tell()))
        b[:n] = b"\0" * n
        self.read_bytes += n
        self.pos = self.tell() + n
        return n


def test_50mb_body_is_refused_413_unread(served):
    _, c, _ = served
    body = CountingInput(50_000_000)
    r = c.post(
        "/predict/image",
        input_stream=body,
        headers={"Content-Type": "image/x-adobe-dng", "Content-Length": str(body.size)},
    )
    assert r.status_code == 413 and "50000000 bytes > the 20000000 byte limit" in r.json["details"]["body"]
    assert body.read_bytes == 0


def test_tabular_routes_refuse_on_an_image_server(served):
    _, c, _ = served
    for path, payload in (("/predict", {"customer_age": 40}), ("/predict/batch", [{"customer_age": 40}])):
        r = c.post(path, json=payload)
        assert r.status_code == 409 and "POST /predict/image" in r.json["details"]["path"], r.json
    model = c.get("/model").json["champion"]
    assert model["runtime"] == "onnx" and model["dataset"] == "raw_digits" and model["threshold"] is None
    spec = c.get("/openapi.json")
    assert (
        spec.status_code == 200
        and "image/x-adobe-dng" in spec.json["paths"]["/predict/image"]["post"]["requestBody"]["content"]
    )


def test_explain_on_the_image_model_is_422_naming_why(served, image_model):
    _, c, store = served
    before = store.count_predictions()
    _, data = dng(image_model)
    r = c.post("/predict/image?explain=true", data=data, headers={"Content-Type": "image/x-adobe-dng"})
    assert r.status_code == 422, r.json
    assert "image model" in r.json["details"]["explain"] and "tree" in r.json["details"]["explain"]
    assert (
        c.post("/predict/image?explain=sure", data=data, headers={"Content-Type": "image/x-adobe-dng"}).status_code
        == 422
    )
    assert store.count_predictions() == before  # refused before anything was logged


def test_image_route_refuses_on_a_tabular_server(tmp_path):
    from churnops.settings import Settings
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager

    s = Settings(_env_file=None, state_dir=tmp_path, mlflow_tracking_uri="http://127.0.0.1:9")
    app = create_app(s, store=SQLiteStore(tmp_path / "p.db"), models=ModelManager(s), start_background=False)
    r = app.test_client().post("/predict/image", data=b"\x89PNG\r\n\x1a\n", headers={"Content-Type": "image/png"})
    assert r.status_code == 409 and "DATASET=bank_churners" in r.json["details"]["path"]


def test_image_prediction_is_logged_with_a_summary_not_the_pixels(served, image_model, raw_contract):
    app, c, store = served
    f, data = dng(image_model, 5)
    r = c.post("/predict/image", data=data, headers={"Content-Type": "image/x-adobe-dng", "X-Request-ID": "logged-5"})
    assert r.status_code == 200
    app.extensions["churn"].plog.flush()
    (rec,) = [x for x in store.find_predictions(limit=10_000) if x["request_id"] == "logged-5"]
    x = load_image(f.path, raw_contract)
    feats = rec["features"]
    assert feats["sha256"] == hashlib.sha256(data).hexdigest() and feats["bytes"] == len(data)
    assert (feats["width"], feats["height"]) == (32, 32)
    assert np.allclose(feats["channel_means"], x.reshape(3, -1).mean(1), atol=1e-5)
    assert len(feats["embedding"]["projection"]) == 16 and feats["embedding"]["dim"] == 8 * 16
    assert rec["decision"] == r.json["class_index"] and rec["predicted_class"] == r.json["class"]
    assert rec["probability"] == pytest.approx(max(r.json["probabilities"].values()))
    assert rec["model_version"] == image_model["version"] and rec["source"] == "http"
    assert len(feats["thumbnail_png"]) < 1100  # a 16x16 PNG derivative
    assert len(json.dumps(rec)) < 3000  # a summary: 32x32x3 pixels (4 kB as base64) would not fit


def test_a_model_of_another_contract_is_refused(image_model, raw_contract):
    from serving.image import load_image_model
    from serving.model import ModelLoadError

    s = image_model["settings"]
    other = raw_contract.model_copy(update={"classes": [str(i) for i in range(9)] + ["nine"]})
    with pytest.raises(ModelLoadError, match="trained with data contract 'raw_digits'"):
        load_image_model(f"models:/{s.model_name}@champion", "champion", s, other)


def test_stream_image_uri_records_end_to_end(image_model, raw_contract):
    """DNGs in moto S3, records on moto Kinesis: results + log entries; poison records to the DLQ."""
    from churnops.aws import client, ensure_streams
    from churnops.store.sqlite import SQLiteStore
    from serving.consumer import Consumer
    from serving.model import ModelManager
    from tests.support.streams import read_stream

    tag = uuid.uuid4().hex[:8]
    s = image_model["settings"].model_copy(
        update={
            "input_stream": f"img-in-{tag}",
            "output_stream": f"img-out-{tag}",
            "dlq_stream": f"img-dlq-{tag}",
            "stream_shards": 1,
            "consumer_poll_interval_s": 0.01,
            "image_max_body_bytes": 10_000,
            "dlq_s3_payloads": False,
        }
    )
    ensure_streams(s)
    s3, kin = client("s3", s), client("kinesis", s)
    s3.create_bucket(Bucket=s.bucket)
    f, data = dng(image_model, 7)
    s3.put_object(Bucket=s.bucket, Key="in/7.dng", Body=data)
    s3.put_object(Bucket=s.bucket, Key="in/notes.txt", Body=b"not an image at all")
    s3.put_object(Bucket=s.bucket, Key="in/big.dng", Body=b"II*\x00" + b"\0" * 20_000)
    s3.put_object(Bucket=s.bucket, Key="in/bggr.dng", Body=bggr(data))
    records = [
        {"request_id": "ok-7", "image_uri": f"s3://{s.bucket}/in/7.dng"},
        {"request_id": "missing", "image_uri": f"s3://{s.bucket}/in/nope.dng"},
        {"request_id": "text", "image_uri": f"s3://{s.bucket}/in/notes.txt"},
        {"request_id": "big", "image_uri": f"s3://{s.bucket}/in/big.dng"},
        {"request_id": "cfa", "image_uri": f"s3://{s.bucket}/in/bggr.dng"},
        {"request_id": "elsewhere", "image_uri": "s3://someone-elses-bucket/x.dng"},
    ]
    for r in records:
        kin.put_record(StreamName=s.input_stream, Data=json.dumps(r).encode(), PartitionKey=r["request_id"])
    kin.put_record(StreamName=s.input_stream, Data=b"{not json", PartitionKey="junk")
    mm = ModelManager(s)
    mm.load_initial()
    store = SQLiteStore(s.state_dir / f"stream-{tag}.db")
    consumer = Consumer(s, store=store, models=mm)
    consumer.run(max_idle_polls=3)
    consumer.plog.close()

    want = expected(image_model, load_image(f.path, raw_contract))
    (res,) = read_stream(kin, s.output_stream)
    assert res["request_id"] == "ok-7" and res["class_index"] == int(want.argmax())
    assert np.allclose(list(res["probabilities"].values()), want, atol=1e-5)
    assert res["image_uri"] == f"s3://{s.bucket}/in/7.dng" and res["model_version"] == image_model["version"]
    dead = {d["partition_key"]: d for d in read_stream(kin, s.dlq_stream)}
    codes = {k: d["reason_code"] for k, d in dead.items()}
    assert codes == {
        "missing": "image_not_found",
        "text": "not_an_image",
        "big": "image_too_large",
        "cfa": "unsupported_raw",
        "elsewhere": "bucket_not_allowed",
        "junk": codes["junk"],
    }, dead
    assert codes["junk"] == "invalid_json", dead["junk"]
    counted = {(r["reason"], r["field"]): r["count"] for r in store.find_rejections()}  # the window's data quality
    assert {reason for reason, field in counted if field == ""} == set(codes.values())
    assert sum(n for (_, field), n in counted.items() if field == "") == len(codes)
    (logged,) = store.find_predictions(limit=100)
    assert logged["request_id"] == "ok-7" and logged["_id"].startswith("stream:") and logged["source"] == "stream"
    assert logged["features"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_stream_image_model_failing_on_everything_makes_the_shard_wait(image_model, raw_contract):
    """An image model that fails on every record (and on a blank image) is not the records' fault: no
    result, no dead letter, no checkpoint; once the model works again every record gets its result."""
    from churnops.aws import client, ensure_streams
    from churnops.store.sqlite import SQLiteStore
    from serving.consumer import Consumer
    from serving.model import ModelManager
    from tests.support.streams import read_stream

    tag = uuid.uuid4().hex[:8]
    s = image_model["settings"].model_copy(
        update={
            "input_stream": f"imgw-in-{tag}",
            "output_stream": f"imgw-out-{tag}",
            "dlq_stream": f"imgw-dlq-{tag}",
            "stream_shards": 1,
            "consumer_poll_interval_s": 0.01,
            "stream_backoff_max_s": 0.1,
            "dlq_s3_payloads": False,
        }
    )
    ensure_streams(s)
    s3, kin = client("s3", s), client("kinesis", s)
    s3.create_bucket(Bucket=s.bucket)
    _, data = dng(image_model, 3)
    s3.put_object(Bucket=s.bucket, Key="wait/3.dng", Body=data)
    for i in range(3):
        rec = {"request_id": f"w-{i}", "image_uri": f"s3://{s.bucket}/wait/3.dng"}
        kin.put_record(StreamName=s.input_stream, Data=json.dumps(rec).encode(), PartitionKey="k")
    mm = ModelManager(s)
    mm.load_initial()
    state = {"broken": True}
    for m in mm.current.models():
        real = m.bundle.predict

        def predict(X, real=real):
            if state["broken"]:
                raise RuntimeError("onnxruntime: model broken (test)")
            return real(X)

        m.bundle.predict = predict
    consumer = Consumer(s, store=SQLiteStore(s.state_dir / f"wait-{tag}.db"), models=mm)
    consumer.run(max_idle_polls=3)
    assert consumer.processed == 0 and consumer.dead == 0
    assert read_stream(kin, s.output_stream) == [] and read_stream(kin, s.dlq_stream) == []
    (sh,) = consumer.shards
    assert consumer.leases.stored_checkpoint(sh) is None  # the shard waits at its start
    state["broken"] = False
    consumer.stopping = False
    consumer.run(max_idle_polls=3)
    consumer.plog.close()
    assert sorted(r["request_id"] for r in read_stream(kin, s.output_stream)) == ["w-0", "w-1", "w-2"]
    assert read_stream(kin, s.dlq_stream) == []


def test_predict_image_through_gunicorn(image_model, raw_contract, tmp_path):
    """The real server (gunicorn, its keep-alive worker): a DNG body, a 2 MB one over MAX_BODY_BYTES but
    under the image limit (read and refused by content), and a 50 MB one refused 413 from its headers."""
    import socket
    import sys
    import time
    import urllib.error
    import urllib.request
    from pathlib import Path

    from ops.localservers import Server, free_port, wait_http

    s = image_model["settings"]
    port = free_port()
    env = {
        "DATASET": "raw_digits",
        "MODEL_NAME": s.model_name,
        "MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
        "STATE_DIR": str(tmp_path / "state"),
        "API_PORT": str(port),
        "API_WORKERS": "1",
        "ADMIN_TOKEN": "test-admin-token-123456",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
    }
    root = Path(__file__).resolve().parents[2]
    srv = Server(
        [sys.executable, "-m", "serving.server"],
        tmp_path / "gunicorn.log",
        env=env,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"

    def post(body: bytes, ctype: str):
        req = urllib.request.Request(f"{url}/predict/image", data=body, method="POST", headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    try:
        wait_http(f"{url}/health", 60, srv.proc, tmp_path / "gunicorn.log")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except urllib.error.HTTPError:
                time.sleep(0.2)
        f, data = dng(image_model, 9)
        want = expected(image_model, load_image(f.path, raw_contract))
        st, b = post(data, "image/x-adobe-dng")
        assert st == 200 and b["class_index"] == int(want.argmax()) and b["model_version"] == image_model["version"]
        st, b = post(b"\0" * 2_000_000, "image/x-adobe-dng")
        assert st == 422 and b["error"] == "not an image", b
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /predict/image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                b"Content-Length: 50000000\r\n\r\n" + b"\0" * 65536
            )
            status, answer = read_answer(sock)
        assert status == 413 and b"20000000 byte limit" in answer, answer[:300]
    finally:
        srv.stop()
