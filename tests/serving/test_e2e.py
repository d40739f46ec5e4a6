"""End to end on real servers: gunicorn (2 workers), MLflow, moto Kinesis, the trained model."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from ops.localservers import Server, free_port, wait_http
from tests.support.paths import ROOT
from tests.support.registry import register_copy, unique_name
from tests.support.serving import example, http, serving_env
from tests.support.streams import read_stream


@pytest.fixture(scope="module")
def e2e_model(stack_env, trained) -> str:
    """This module's own registered model: the session's trained version copied as version 1 (champion)."""
    name = unique_name(f"{stack_env.model_name}-e2e")
    register_copy(stack_env, stack_env.model_name, trained["version"], name)
    return name


@pytest.fixture(scope="module")
def api(stack_env, trained, e2e_model, tmp_path_factory):
    """gunicorn (2 workers) pinned to the trained run, under this module's own model name (a reload
    may name its versions)."""
    d = tmp_path_factory.mktemp("api")
    port = free_port()
    env = serving_env(stack_env, trained, d / "state", MODEL_NAME=e2e_model, API_PORT=port, API_WORKERS=2)
    srv = Server(
        [sys.executable, "-m", "serving.server"],
        d / "gunicorn.log",
        env=env,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", 60, srv.proc, d / "gunicorn.log")
    deadline = time.monotonic() + 120
    pids = set()
    while time.monotonic() < deadline and len(pids) < 2:  # both workers have loaded the model
        st, body = http("GET", f"{url}/health")
        if st == 200 and body.get("model_loaded"):  # the same answer names the worker and its model state
            pids.add(body["pid"])
        time.sleep(0.1)
    assert len(pids) == 2, f"both workers should have loaded the model: {pids}"
    yield {"url": url, "env": env, "state": d / "state", "log": d / "gunicorn.log"}
    srv.stop()


def metric_sum(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_http_predictions_model_metrics_logs(api, trained):
    url = api["url"]
    st, m = http("GET", f"{url}/model")
    assert st == 200 and m["champion"]["run_id"] == trained["run_id"] and m["champion"]["version"] == "1"
    assert m["champion"]["runtime"] == "onnx" and "champion" in m["champion"]["aliases"]
    assert m["champion"]["threshold"] == pytest.approx(trained["threshold"])
    tag = uuid.uuid4().hex[:6]
    t0 = time.time()
    pids = set()
    for i in range(40):
        st, b = http("POST", f"{url}/predict", {"request_id": f"{tag}-{i}", "features": example(customer_age=30 + i)})
        assert st == 200 and b["model_version"] == "1" and b["route"] == "champion"
        pids.add(http("GET", f"{url}/health")[1]["pid"])
    st, b = http("POST", f"{url}/predict", example(customer_age=float("nan")) | {"customer_age": 1000})
    assert st == 422 and "customer_age" in b["details"]
    st, b = http("POST", f"{url}/predict", b'{"customer_age": NaN}')
    assert st == 400
    st, batch = http("POST", f"{url}/predict/batch", [example()] * 20)
    assert st == 200 and batch["count"] == 20
    assert len(pids) == 2, "both workers should have answered"
    # /metrics aggregates the workers: whichever worker answers sees all 60 predictions
    for _ in range(4):
        st, text = http("GET", f"{url}/metrics")
        assert metric_sum(text, "churn_predictions_total", source="http") >= 60
        assert metric_sum(text, "churn_rejections_total", reason="out_of_range") >= 1
        assert metric_sum(text, "churn_rejections_total", reason="non_finite_number") >= 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st, logs = http("GET", f"{url}/logs?start={t0 - 1}&limit=1000")
        if sum(r["request_id"].startswith(tag) for r in logs["records"]) == 40:
            break
        time.sleep(0.2)
    mine = [r for r in logs["records"] if r["request_id"].startswith(tag)]
    assert len(mine) == 40 and all(r["model_run_id"] == trained["run_id"] for r in mine)
    st, fb = http("POST", f"{url}/feedback", {"request_id": f"{tag}-0", "outcome": 1})
    assert st == 202


def test_connections_close_cleanly_with_body_read_or_not(api):
    """Every response complete; a 413 for a body over the limit arrives whole while the client still sends."""
    import socket
    import threading

    host, port = api["url"].rsplit("/", 1)[1].split(":")
    for _ in range(50):  # the fast close: every response complete, no resets
        st, b = http("POST", f"{api['url']}/predict", example())
        assert st == 200 and 0 <= b["probability"] <= 1
    body = b"x" * 3_000_000  # over the 1 MB limit: answered before the body is read
    s = socket.create_connection((host, int(port)), timeout=20)
    s.sendall(
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(body)
    )
    sender = threading.Thread(target=lambda: _send_quietly(s, body))
    sender.start()
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < content_length(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    sender.join(20)
    s.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and json.loads(payload)["details"]["body"].startswith("request body larger")
    # 3 MB: drained (serving/edge.py) so the sender finished and read the whole answer
    assert not sender.is_alive()


def content_length(data: bytes) -> int:
    """The Content-Length of a response head in `data` (0 until the head is complete)."""
    head = data.partition(b"\r\n\r\n")[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def test_connections_are_kept_alive_pipelined_and_spread(api):
    """One connection serves many requests; pipelined requests are all answered; connections spread evenly."""
    import http.client
    import socket

    host, port = api["url"].rsplit("/", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.connect()
    sock, pids = conn.sock, set()
    for i in range(20):
        path, body = ("/predict", json.dumps(example()).encode()) if i % 2 else ("/health", None)
        conn.request("POST" if body else "GET", path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        payload = json.loads(r.read())
        assert r.status == 200 and not r.will_close and r.getheader("Content-Length")  # HTTP/1.1: kept alive
        if path == "/health":
            pids.add(payload["pid"])
    rows = [example(customer_age=20 + i % 50) for i in range(1000)]  # ~0.5 MB, read in one go
    conn.request("POST", "/predict/batch", body=json.dumps(rows).encode(), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    out = json.loads(r.read())
    assert r.status == 200 and out["count"] == 1000 and len({p["request_id"] for p in out["predictions"]}) == 1000
    one = json.dumps(example()).encode()
    conn.request(
        "POST",
        "/predict",
        body=iter([one[:10], one[10:]]),
        encode_chunked=True,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    r = conn.getresponse()
    assert r.status == 200 and 0 <= json.loads(r.read())["probability"] <= 1
    conn.request("OPTIONS", "/predict")  # an answer with an empty body
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b"" and "POST" in r.getheader("Allow")
    conn.request("HEAD", "/health")  # a response without a body keeps the connection usable
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b""
    conn.request("GET", "/")  # the HTML form
    r = conn.getresponse()
    assert r.status == 200 and b"<form" in r.read()
    assert conn.sock is sock and len(pids) == 1, "every request on the one connection, answered by one worker"
    conn.close()

    one = json.dumps(example()).encode()
    req = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (
            len(one),
            one,
        )
    )
    s = socket.create_connection((host, int(port)), timeout=3)  # well under the 5 s keep-alive
    s.sendall(req * 20 + b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")  # more than one round
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    assert data.count(b"HTTP/1.1 200 OK") == 21 and data.count(b'"probability"') == 20

    time.sleep(0.3)  # the workers see the closes above
    conns, owners = [], []
    for _ in range(8):  # opened one after another and kept open: both workers take some
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        c.request("GET", "/health")
        owners.append(json.loads(c.getresponse().read())["pid"])
        conns.append(c)
    counts = sorted(owners.count(p) for p in set(owners))
    for c in conns:
        c.close()
    assert len(counts) == 2, owners  # granian's workers share the listening socket: no strict turns

    def first_request(_):  # a burst: 24 connections at once, each kept open after its first answer
        c = http.client.HTTPConnection(host, int(port), timeout=20)
        c.request("POST", "/predict", body=json.dumps(example()).encode(), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["probability"] >= 0
        c.request("GET", "/health")
        return c, json.loads(c.getresponse().read())["pid"]

    with ThreadPoolExecutor(24) as pool:
        opened = list(pool.map(first_request, range(24)))
    owners = [pid for _, pid in opened]
    for c, _ in opened:
        c.close()
    assert len(set(owners)) == 2 and min(owners.count(p) for p in set(owners)) >= 6, owners


def _send_quietly(sock, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:  # the server stops reading once it has answered
        pass


def test_bad_reload_keeps_serving(api, trained):
    url = api["url"]
    hdr = {"Authorization": "Bearer test-admin"}
    gen0 = http("GET", f"{url}/model", headers=hdr)[1].get("generation") or 0
    st, b = http("POST", f"{url}/model/reload", {"run_id": "0" * 32}, headers=hdr)
    assert st == 202, b
    done = wait_reload(url, b["status_url"], hdr)
    assert done["status"] == "failed" and "0" * 32 in done["reason"], done
    for _ in range(6):
        st, p = http("POST", f"{url}/predict", example())
        assert st == 200 and p["model_run_id"] == trained["run_id"]
    st, b = http("POST", f"{url}/model/reload", {}, headers=hdr)  # reload the pin: accepted
    assert st == 202, b
    done = wait_reload(url, b["status_url"], hdr)
    assert done["status"] == "loaded" and done["run_id"] == trained["run_id"] and done["generation"] == gen0 + 2, (
        done
    )  # the failed one took gen0 + 1


@pytest.fixture(scope="module")
def challenger_version(stack_env, e2e_model, tmp_path_factory):
    """A version of this module's own model from a different run, aliased `challenger`."""
    import mlflow

    from churnops.bundle import ChurnPyfunc
    from churnops.registry import client
    from tests.support.serving import make_bundle

    name = e2e_model
    d = tmp_path_factory.mktemp("chall")
    bundle = make_bundle(d / "bundle", 5)
    mlflow.set_tracking_uri(stack_env.mlflow_tracking_uri)
    exp = mlflow.set_experiment(stack_env.experiment_name)
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        meta = json.loads((bundle / "meta.json").read_text()) | {"run_id": run.info.run_id}
        (bundle / "meta.json").write_text(json.dumps(meta))
        info = mlflow.pyfunc.log_model(name="model", python_model=ChurnPyfunc(), artifacts={"bundle": str(bundle)})
    mv = client(stack_env).create_model_version(name, info.model_uri, run_id=run.info.run_id, model_id=info.model_id)
    # a challenger that passed the rules (the servers send canary traffic to no other)
    client(stack_env).set_model_version_tag(name, mv.version, "outcome", "awaiting approval")
    client(stack_env).set_registered_model_alias(name, "challenger", mv.version)
    return {"run_id": run.info.run_id, "version": str(mv.version), "model_name": name}


def test_canary_from_registry(stack_env, trained, challenger_version, tmp_path):
    from serving.model import ModelManager, route_fraction

    s = stack_env.model_copy(
        update={
            "model_name": challenger_version["model_name"],
            "run_id": trained["run_id"],
            "canary_fraction": 0.3,
            "state_dir": tmp_path,
        }
    )
    mm = ModelManager(s)
    ms = mm.load_initial()
    assert ms.champion.run_id == trained["run_id"] and ms.champion.version == "1"
    assert ms.challenger.run_id == challenger_version["run_id"]
    assert ms.challenger.version == challenger_version["version"] == "2"
    picks = [ms.pick(uuid.uuid4().hex) for _ in range(2000)]
    share = sum(p.route == "challenger" for p in picks) / 2000
    assert abs(share - 0.3) < 0.05
    for i in range(50):
        rid = f"stable-{i}"
        assert ms.pick(rid).route == ms.pick(rid).route == ("challenger" if route_fraction(rid) < 0.3 else "champion")
    # fraction 0: champion only, the challenger is not even loaded
    s0 = s.model_copy(update={"canary_fraction": 0.0})
    assert ModelManager(s0).load_initial().challenger is None


def test_stream_end_to_end_with_sigkill(stack_env, trained, tmp_path):
    """Raw, base64 and poison records; the consumer SIGKILLed mid-stream and restarted loses nothing."""
    import base64

    from churnops.aws import client, ensure_streams
    from churnops.store.sqlite import SQLiteStore

    tag = uuid.uuid4().hex[:8]
    streams = {"INPUT_STREAM": f"in-{tag}", "OUTPUT_STREAM": f"out-{tag}", "DLQ_STREAM": f"dlq-{tag}"}
    s = stack_env.model_copy(
        update={
            "input_stream": streams["INPUT_STREAM"],
            "output_stream": streams["OUTPUT_STREAM"],
            "dlq_stream": streams["DLQ_STREAM"],
            "stream_shards": 2,
        }
    )
    ensure_streams(s)
    kin = client("kinesis", s)
    n = 1500
    good = [
        json.dumps({"request_id": f"e{i}", "features": example(total_trans_ct=10 + i % 100)}).encode() for i in range(n)
    ]
    good += [base64.b64encode(json.dumps(example()).encode()) for _ in range(20)]
    poison = [b"\x00garbage", json.dumps(example(card_category="diamond")).encode()]
    entries = [{"Data": d, "PartitionKey": f"k{i}"} for i, d in enumerate(good + poison)]
    keys = []
    for i in range(0, len(entries), 500):
        resp = kin.put_records(StreamName=s.input_stream, Records=entries[i : i + 500])
        assert not resp.get("FailedRecordCount")
        keys += [(r["ShardId"], r["SequenceNumber"]) for r in resp["Records"]]
    env = serving_env(stack_env, trained, tmp_path / "state", CONSUMER_BATCH_SIZE=100, **streams)
    args = [sys.executable, "-m", "serving.consumer"]
    c1 = Server(args, tmp_path / "c1.log", env=env, cwd=ROOT)
    store = SQLiteStore(tmp_path / "state" / "predictions.db")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            done = store.count_predictions()
        except Exception:
            done = 0
        if done >= 300:
            break
        time.sleep(0.05)
    os.kill(c1.proc.pid, signal.SIGKILL)  # mid-stream, no chance to flush
    c1.proc.wait(10)
    c1.fh.close()
    assert 0 < store.count_predictions() < len(good), (tmp_path / "c1.log").read_text()[-3000:]
    c2 = Server(args, tmp_path / "c2.log", env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and store.count_predictions() < len(good):
        time.sleep(0.2)
    time.sleep(1.0)
    c2.proc.send_signal(signal.SIGTERM)  # graceful: finishes its batch and exits 0
    assert c2.proc.wait(30) == 0
    c2.fh.close()
    results = read_stream(kin, s.output_stream)
    got = {(r["shard_id"], r["sequence_number"]) for r in results}
    assert got == set(keys[: len(good)]), "every valid input has a result"
    assert len(results) - len(got) <= 2 * 100, "at most the last batch per shard re-emitted"
    dlq = read_stream(kin, s.dlq_stream)
    assert {(d["shard_id"], d["sequence_number"]) for d in dlq} == set(keys[len(good) :])
    ids = {r["_id"] for r in store.find_predictions()}
    created = kin.describe_stream_summary(StreamName=s.input_stream)["StreamDescriptionSummary"][
        "StreamCreationTimestamp"
    ]
    ms = round(created.timestamp() * 1000)
    assert ids == {f"stream:{ms}:{sh}:{q}" for sh, q in keys[: len(good)]}, "every input has one log record"
    rid = {r["request_id"] for r in results}
    assert {f"e{i}" for i in range(n)} <= rid
    assert all(r["model_run_id"] == trained["run_id"] for r in results)
    assert re.search(r"shard .* resuming after", (tmp_path / "c2.log").read_text())


def test_reload_reaches_every_worker(api, trained, challenger_version, stack_env):
    """A reload answered by one worker is followed by the other (shared state file)."""
    url = api["url"]
    hdr = {"X-Admin-Token": "test-admin"}
    target = f"models:/{challenger_version['model_name']}/{challenger_version['version']}"
    st, b = http("POST", f"{url}/model/reload", {"model_uri": target, "challenger_uri": None}, headers=hdr)
    assert st == 202 and b["status"] in ("pending", "loaded"), b
    done = wait_reload(url, b["status_url"], hdr)
    assert done["status"] == "loaded" and done["run_id"] == challenger_version["run_id"], done
    try:
        deadline = time.monotonic() + 20
        seen: dict[int, str] = {}
        while time.monotonic() < deadline:
            m = http("GET", f"{url}/model")[1]
            seen[m["pid"]] = m["champion"]["run_id"]
            if len(seen) == 2 and set(seen.values()) == {challenger_version["run_id"]}:
                break
            time.sleep(0.1)
        assert len(seen) == 2 and set(seen.values()) == {challenger_version["run_id"]}, seen
    finally:
        st, b = http("POST", f"{url}/model/reload", {}, headers=hdr)
        assert st == 202, b
        done = wait_reload(url, b["status_url"], hdr)
        assert done["status"] == "loaded" and done["run_id"] == trained["run_id"], done


def wait_reload(url: str, status_url: str, hdr: dict, timeout: float = 60.0) -> dict:
    """Poll a background reload's status (any worker answers it) until it is no longer pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st, job = http("GET", f"{url}{status_url}", headers=hdr)
        assert st == 200, job
        if job["status"] != "pending":
            return job
        time.sleep(0.1)
    raise AssertionError(f"reload still pending: {job}")
