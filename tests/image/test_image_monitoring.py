"""Image monitoring: the training reference, the image window (channel Wasserstein, embedding MMD,
class drift, realized accuracy), the report's HTML section, the gauges, camera drift in the simulators.

The servers are real (the module's CNN registered on the test MLflow server, an image API on a
SQLite log); captures are rendered by the simulator's drifted camera. Expected values are computed
here independently: scipy's `wasserstein_distance` on the channel means read back from the store
and from the run's `image_reference.json`, accuracy from the digits' true classes.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("torch", reason="the image extra is not installed (pip install -e .[image])")
pytest.importorskip("rawpy", reason="the image extra is not installed (pip install -e .[image])")

N = 60  # captures per window
CLEAN_START = 300  # digit indices the model never saw (the fixture trains on the first 300)


def means_of(data: bytes, contract) -> np.ndarray:
    """Per-channel means of the model input of one DNG (through the ISP), computed here."""
    from serving.image import DNG, decode

    return decode(data, DNG, contract).x.reshape(3, -1).mean(1)


# ---- no server ---------------------------------------------------------------------------------------------


def test_camera_drift_moves_the_channel_means(raw_contract):
    from simulators.camera import capture, parse_camera_drift

    idx = range(CLEAN_START, CLEAN_START + 12)
    clean = np.array([means_of(capture(i, raw_contract, 7, [], 0.0)[0], raw_contract) for i in idx])
    brighter = np.array([means_of(capture(i, raw_contract, 7, ["exposure"], 1.0)[0], raw_contract) for i in idx])
    warm = np.array([means_of(capture(i, raw_contract, 7, ["white_balance"], 1.0)[0], raw_contract) for i in idx])
    noisy = [capture(i, raw_contract, 7, ["noise"], 1.0)[0] for i in idx]
    assert (brighter > clean).all()  # +1 stop raises every channel of every image
    assert (warm[:, 0] > clean[:, 0]).all() and (warm[:, 2] < clean[:, 2]).all()  # red up, blue down
    assert capture(CLEAN_START, raw_contract, 7, [], 0.0) == capture(CLEAN_START, raw_contract, 7, [], 0.0)
    assert noisy[0] != capture(CLEAN_START, raw_contract, 7, [], 0.0)[0]
    assert parse_camera_drift("noise, exposure") == ["noise", "exposure"]
    with pytest.raises(ValueError, match=r"unknown camera drift kind\(s\) \['shift'\]"):
        parse_camera_drift("noise,shift")


def test_image_feedback_parses_a_class_index_or_name(raw_contract):
    from churnops.image.feedback import ImageFeedback

    f = ImageFeedback()
    assert f.parse_feedback({"outcome": 7}, raw_contract) == (7, {}, "outcome")
    assert f.parse_feedback({"label": "3"}, raw_contract) == (3, {}, "outcome")
    assert f.parse_feedback({"outcome": 4.0}, raw_contract)[0] == 4
    for bad in (10, -1, 2.5, True, None, "ten", [1]):
        v, problems, _ = f.parse_feedback({"outcome": bad}, raw_contract)
        assert v is None and "expected a class index 0..9" in problems["outcome"], bad


# ---- on a served model -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitored(image_model, raw_contract):
    """An image server; a clean window of N captures, then N with camera noise, each with feedback.

    Returns the app, client, store, settings and the window bounds and sent requests.
    """
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager
    from simulators.camera import capture

    s = image_model["settings"].model_copy(update={"report_min_rows": 30, "image_mmd_permutations": 100})
    mm = ModelManager(s)
    mm.load_initial()
    store = SQLiteStore(s.state_dir / "monitored.db")
    app = create_app(s, store=store, models=mm, start_background=False)
    plog = app.extensions["churn"].plog
    plog.start()
    c = app.test_client()
    sent: dict[str, list] = {"clean": [], "noise": []}

    def post(kind: str, drift: list[str]) -> None:
        for k in range(N):
            i = CLEAN_START + k
            data, label = capture(i, raw_contract, 7, drift, 1.0)
            rid = f"mon-{kind}-{i}"
            r = c.post("/predict/image", data=data, headers={"Content-Type": "image/x-adobe-dng", "X-Request-ID": rid})
            assert r.status_code == 200, r.json
            sent[kind].append((rid, label, r.json["class_index"]))
            # the true class, as an index or as the class name
            fb = {"request_id": rid, "outcome": label} if k % 2 else {"request_id": rid, "label": str(label)}
            assert c.post("/feedback", json=fb).status_code == 202
        plog.flush()

    t0 = time.time() - 0.01
    post("clean", [])
    t_mid = time.time() + 0.01
    time.sleep(0.05)
    post("noise", ["noise"])
    t_end = time.time() + 0.01
    time.sleep(0.05)  # what other tests log later is outside both windows
    yield {
        "app": app,
        "client": c,
        "store": store,
        "settings": s,
        "t0": t0,
        "t_mid": t_mid,
        "t_end": t_end,
        "sent": sent,
    }
    plog.close()


def window(m, raw_contract, start: float, end: float) -> dict:
    from churnops.monitoring.window import summarize

    return summarize(m["store"], m["settings"], raw_contract, (end - start) / 3600.0, now=end, fresh=True).summary


def reference_records(image_model) -> list[dict]:
    """The run's logged reference, read from MLflow here."""
    import mlflow

    mlflow.set_tracking_uri(image_model["settings"].mlflow_tracking_uri)
    return mlflow.artifacts.load_dict(f"runs:/{image_model['run_id']}/image_reference.json")["records"]


def test_training_logs_an_image_reference(image_model, raw_contract):
    import mlflow

    mlflow.set_tracking_uri(image_model["settings"].mlflow_tracking_uri)
    ref = mlflow.artifacts.load_dict(f"runs:/{image_model['run_id']}/image_reference.json")
    assert ref["classes"] == raw_contract.classes and ref["rows"] == len(ref["records"]) == 300
    first = ref["records"][0]
    assert set(first["features"]) >= {"sha256", "channel_means", "embedding", "thumbnail_png"}
    f = next(f for f in image_model["files"] if f.rel == first["_id"])
    assert np.allclose(first["features"]["channel_means"], means_of(f.path.read_bytes(), raw_contract), atol=1e-5)


def test_noise_drift_is_detected_and_a_clean_window_is_not(monitored, image_model, raw_contract):
    from scipy.stats import wasserstein_distance

    ref = np.array([r["features"]["channel_means"] for r in reference_records(image_model)])
    clean = window(monitored, raw_contract, monitored["t0"], monitored["t_mid"])
    noisy = window(monitored, raw_contract, monitored["t_mid"], monitored["t_end"])
    for w, kind in ((clean, "clean"), (noisy, "noise")):
        assert w["n"] == N and w["task"] == "image_classification" and w["reference_run_id"] == image_model["run_id"]
        rows = monitored["store"].find_predictions(start=w["window"]["start"], end=w["window"]["end"])
        assert sorted(r["request_id"] for r in rows) == sorted(rid for rid, _, _ in monitored["sent"][kind])
        cur = np.array([r["features"]["channel_means"] for r in rows])
        for j, ch in enumerate("rgb"):  # independent: scipy on the numbers read back here
            assert w["image"]["channel_wasserstein"][ch] == pytest.approx(wasserstein_distance(ref[:, j], cur[:, j]))
        sent = monitored["sent"][kind]
        acc = np.mean([label == pred for _, label, pred in sent])
        assert w["performance"]["n"] == N and w["performance"]["overall"]["accuracy"] == pytest.approx(acc)
    cm, nm = clean["image"]["embedding_mmd"], noisy["image"]["embedding_mmd"]
    assert cm["p_value"] > 0.05 and clean["image"]["signals"]["embedding_mmd"] == "ok", clean["image"]
    assert nm["p_value"] < 0.01 and nm["mmd2"] > cm["mmd2"], noisy["image"]
    assert noisy["image"]["signals"]["embedding_mmd"] == "critical" and noisy["status"] == "critical"
    assert "embedding_mmd" in noisy["drift"]["critical_features"]
    assert len(noisy["image"]["thumbnails"]["current"]) == 8 and len(noisy["image"]["thumbnails"]["reference"]) == 8


def test_report_has_the_image_section_with_thumbnails(monitored, raw_contract, tmp_path):
    import base64
    import json

    from reporting.report import build_report

    m = monitored
    hours = (m["t_end"] - m["t_mid"]) / 3600.0
    summary = build_report(
        m["store"], m["settings"], raw_contract, window_hours=hours, now=m["t_end"], out_dir=tmp_path
    )
    assert summary["status"] == "drift_critical" and summary["n"] == N, summary.get("message")
    page = (tmp_path / summary["files"]["html"]).read_text()
    assert '<section id="image-drift">' in page and "embedding MMD" in page and "channel R Wasserstein" in page
    w = summary["image"]["channel_wasserstein"]
    assert f"{w['r']:.4f}" in page and f"p={summary['image']['embedding_mmd']['p_value']:.3g}" in page
    for side in ("reference", "current"):
        block = page.split(f'<div id="thumbs-{side}">', 1)[1].split("</div>", 1)[0]
        thumbs = block.split('src="data:image/png;base64,')[1:]
        assert len(thumbs) == 8
        assert base64.b64decode(thumbs[0].split('"', 1)[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in page and "http://" not in page and "https://" not in page  # offline, no CDN
    saved = json.loads((tmp_path / summary["files"]["json"]).read_text())
    assert saved["drift"]["critical_features"] == summary["drift"]["critical_features"]
    (rec,) = [r for r in m["store"].list_reports() if r["_id"] == summary["id"]]
    assert rec["status"] == "drift_critical" and rec["drift_status"] == "critical"


def test_drift_endpoints_and_gauges_on_an_image_server(monitored, raw_contract):
    from prometheus_client import CollectorRegistry, generate_latest

    from churnops.monitoring.gauges import DriftGauges

    c = monitored["client"]
    hours = (time.time() - monitored["t0"]) / 3600.0
    for _ in range(100):  # the reference is fetched by a background thread: 503 + Retry-After until then
        r = c.get(f"/drift/report?hours={hours:.6f}")
        if r.status_code != 503:
            break
        time.sleep(0.1)
    assert r.status_code == 200, r.json
    body = r.json
    assert body["n"] >= 2 * N and body["status"] == "critical" and "embedding_mmd" in body["drift"]["critical_features"]
    text = c.get(f"/drift/metrics?hours={hours:.6f}").get_data(as_text=True)
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    for ch in "rgb":
        v = float(lines[f'churn_image_channel_wasserstein{{channel="{ch}"}}'])
        assert v == pytest.approx(body["image"]["channel_wasserstein"][ch])
    assert "churn_image_embedding_mmd_p_value" in text and "churn_realized_accuracy" in text
    reg = CollectorRegistry()
    DriftGauges(reg, multiprocess_mode=None).update(body)
    assert reg.get_sample_value("churn_image_channel_wasserstein", {"channel": "r"}) == pytest.approx(
        body["image"]["channel_wasserstein"]["r"]
    )
    assert reg.get_sample_value("churn_image_embedding_mmd_p_value") == body["image"]["embedding_mmd"]["p_value"]
    assert b"churn_image_embedding_mmd2" in generate_latest(reg)


def test_feedback_on_an_image_server(monitored):
    c = monitored["client"]
    rid = monitored["sent"]["clean"][0][0]
    r = c.post("/feedback", json={"request_id": rid, "label": "7"})
    assert r.status_code == 202 and r.json["outcome"] == 7
    r = c.post("/feedback", json={"request_id": rid, "outcome": 12})
    assert r.status_code == 422 and "expected a class index 0..9" in r.json["details"]["outcome"], r.json
    r = c.post("/feedback", json={"request_id": rid, "label": "cat"})
    assert r.status_code == 422 and "unknown class 'cat'" in r.json["details"]["label"], r.json


def test_exposure_drift_raises_the_logged_channel_means(monitored, raw_contract):
    from simulators.camera import capture

    m, c = monitored, monitored["client"]
    pairs = []
    for i in range(CLEAN_START, CLEAN_START + 10):
        rid = f"exp-{i}"
        data, _ = capture(i, raw_contract, 7, ["exposure"], 1.0)  # +1 stop
        assert (
            c.post("/predict/image", data=data, headers={"Content-Type": DNG_TYPE, "X-Request-ID": rid}).status_code
            == 200
        )
        pairs.append((f"mon-clean-{i}", rid))
    m["app"].extensions["churn"].plog.flush()
    logged = {r["request_id"]: np.array(r["features"]["channel_means"]) for r in m["store"].find_predictions()}
    for clean, bright in pairs:
        assert (logged[bright] > logged[clean]).all(), (logged[clean], logged[bright])


DNG_TYPE = "image/x-adobe-dng"


@pytest.fixture(scope="module")
def http_api(monitored):
    """The monitored app behind a real HTTP server (werkzeug, loopback, free port)."""
    import threading

    from werkzeug.serving import make_server

    srv = make_server("127.0.0.1", 0, monitored["app"], threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def test_camera_simulators_send_drifted_captures_over_http_and_kinesis(monitored, http_api, raw_contract):
    """`DRIFT=exposure`: HTTP captures and image_uri stream records are served, logged brighter, and labelled."""
    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore
    from serving.consumer import Consumer
    from serving.model import ModelManager
    from simulators.camera import capture, plan_captures, run_camera_http, run_camera_kinesis

    m, s = (
        monitored,
        monitored["settings"].model_copy(update={"input_stream": "img-sim-in", "output_stream": "img-sim-out"}),
    )
    kw = dict(rate=100, seconds=None, count=6, seed=11, drift_mode="sudden", feedback_delay_s=0.1, api_url=http_api)
    http = run_camera_http(s, raw_contract, drift=["exposure"], **kw)
    assert http.counts["POST /predict/image 200"] == 6 and http.counts["POST /feedback 202"] == 6, http.counts
    assert http.drift["rows_changed"] == {"exposure": 6}

    s3, kin = client("s3", s), client("kinesis", s)
    s3.create_bucket(Bucket=s.bucket)  # the fixture model's own bucket: nothing else in this module makes it
    for name in (s.input_stream, s.output_stream):
        kin.create_stream(StreamName=name, ShardCount=1)
    for _ in range(50):
        if kin.describe_stream(StreamName=s.input_stream)["StreamDescription"]["StreamStatus"] == "ACTIVE":
            break
        time.sleep(0.1)
    st = run_camera_kinesis(s, raw_contract, drift=["exposure"], **kw)
    assert st.counts["kinesis put ok"] == 6 and st.counts["POST /feedback 202"] == 6, st.counts
    store = SQLiteStore(s.state_dir / "camera-stream.db")
    mm = ModelManager(s)
    mm.load_initial()
    consumer = Consumer(s, store=store, models=mm)
    consumer.run(max_idle_polls=3)
    consumer.plog.close()
    streamed = store.find_predictions()
    assert len(streamed) == 6 and all(r["source"] != "http" for r in streamed)

    m["app"].extensions["churn"].plog.flush()
    feedback = {f["request_id"]: f["outcome"] for f in m["store"].find_feedback()}
    for records, seed, prefix in ((m["store"].find_predictions(), 11, "img-http"), (streamed, 12, "img-kin")):
        logged = {r["request_id"]: np.array(r["features"]["channel_means"]) for r in records}
        for p in plan_captures(6, seed, ["exposure"], prefix=prefix):  # what the simulator planned (seeded)
            clean = means_of(capture(p.features["index"], raw_contract, seed, [], 0.0)[0], raw_contract)
            assert (logged[p.request_id] > clean).all(), (p, clean, logged[p.request_id])  # +1 stop: brighter
            assert feedback[p.request_id] == p.outcome  # the true class, posted after the delay


def test_make_simulate_on_an_image_server(http_api, monkeypatch, capsys):
    """`DATASET=raw_digits SIMULATE_DRIFT=white_balance make simulate` = `simulators.run` with camera captures."""
    import json

    from simulators.run import main

    monkeypatch.setenv("DATASET", "raw_digits")
    monkeypatch.setenv("SIMULATE_DRIFT", "white_balance")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    args = ["--only", "http", "--count", "4", "--rate", "100", "--feedback-delay", "0.1", "--api-url", http_api]
    rc = main([*args, "--json"])
    out = json.loads(capsys.readouterr().out)
    http = out["results"]["http"]
    assert rc == 0 and out["drift"] == ["white_balance"], out
    assert http["counts"] == {"POST /predict/image 200": 4, "POST /feedback 202": 4}


def test_retraining_trigger_reads_the_image_window(monitored, raw_contract):
    from reporting.trigger import evaluate_window

    m = monitored
    s = m["settings"].model_copy(update={"retrain_min_critical_features": 1})
    hours = (m["t_end"] - m["t_mid"]) / 3600.0
    d = evaluate_window(m["store"], s, raw_contract, window_hours=hours, now=m["t_end"], dry_run=True)
    assert d["action"] == "dry_run" and "embedding_mmd" in d["numbers"]["critical_features"], d
    assert any("data drift critical" in r and "embedding_mmd" in r for r in d["reasons"]), d["reasons"]
    clean = evaluate_window(
        m["store"], s, raw_contract, window_hours=(m["t_mid"] - m["t0"]) / 3600.0, now=m["t_mid"], dry_run=True
    )
    assert "embedding_mmd" not in clean["numbers"]["critical_features"], clean
