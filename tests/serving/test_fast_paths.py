"""The fast paths (churnops/speed) answer exactly what the plain path answers.

Two apps serve the same model: one with every fast path on (WSGI fast path, one-pass record
validator, column validator and msgspec decoder, compiled trees for batches of 8 rows or more),
one with `FAST_PATHS=off` (the Flask view, the compiled contract validator, ONNX for small
matrices and XGBoost's own predictor for batches). Seeded random bodies, valid and invalid, go to
both; every case compares the status code and the whole body (probabilities within 1e-6).
"""

from __future__ import annotations

import json
import math
import random

import pytest

from churnops.contract import load_contract
from tests.support.serving import post

CONTRACT = load_contract("bank_churners")
RAW = {  # raw column names of the data file, written out
    "customer_age": "Customer_Age",
    "gender": "Gender",
    "education_level": "Education_Level",
    "months_on_book": "Months_on_book",
    "total_trans_ct": "Total_Trans_Ct",
}
CASES = 400


def random_record(rng: random.Random) -> dict:
    """A valid record: numbers in range (ints and floats), categories in random case, the unknown marker."""
    rec = {}
    for name, spec in CONTRACT.features.items():
        if spec.kind == "numeric":
            lo, hi = spec.min if spec.min is not None else -1e6, spec.max if spec.max is not None else 1e6
            hi = min(hi, lo + 50_000)
            v = rng.uniform(lo, hi) if rng.random() < 0.9 else rng.choice([lo, hi, spec.max or hi])  # edges too
            rec[name] = round(v) if spec.dtype == "int" or rng.random() < 0.2 else v
        else:
            c = rng.choice(spec.categories + ["Unknown"])
            rec[name] = rng.choice([c, c.upper(), c.title(), f" {c} "])
    return rec


MUTATIONS = [
    lambda r, rng: r.pop(rng.choice(list(CONTRACT.features)), None),  # a missing field
    lambda r, rng: r.update({rng.choice(CONTRACT.numeric_features): rng.choice([True, None, "x", [], {}])}),
    lambda r, rng: r.update({rng.choice(CONTRACT.numeric_features): rng.choice(["12", " 3.5 ", "nan", "1e999"])}),
    lambda r, rng: r.update({rng.choice(CONTRACT.numeric_features): rng.choice([-1e12, 1e12, 10**400])}),
    lambda r, rng: r.update({"customer_age": rng.choice([17, 101, 17.999, 100.0001, 18, 100, 100.0])}),
    lambda r, rng: r.update({rng.choice(CONTRACT.categorical_features): rng.choice(["diamond", 1, None, ""])}),
    lambda r, rng: r.update({"extra_field": rng.random()}),  # ignored, reported
    lambda r, rng: r.update({"UNKNOWN": "x", "Some Thing": 1}),  # names no feature: ignored
    lambda r, rng: rename_raw(r, rng),  # a raw column name: renamed, reported
    lambda r, rng: r.update({RAW[k]: r.get(k, 1) for k in [rng.choice(list(RAW))]}),  # raw + clean: 422
]


def rename_raw(r: dict, rng: random.Random) -> None:
    k = rng.choice(list(RAW))
    if k in r:
        r[RAW[k]] = r.pop(k)


def random_row(rng: random.Random, i: int, bad: float) -> object:
    rec = random_record(rng)
    if rng.random() < bad:
        for _ in range(rng.choice([1, 1, 2, 3])):
            rng.choice(MUTATIONS)(rec, rng)
    shape = rng.random()
    if shape < 0.4:
        return rec
    if shape < 0.7:
        return {"request_id": f"id-{i}", "features": rec}
    if shape < 0.8:
        return {**rec, "request_id": f"id-{i}"}
    if shape < 0.85:
        return {"request_id": rng.choice(["", " ", "stream:1", "x" * 200, 7, True]), "features": rec}
    if shape < 0.9:
        return {"features": rng.choice([[1], "x", None])}
    if shape < 0.95:
        return rng.choice([[rec], "text", 3, None])
    return {"request_id": f"id-{i}", "features": rec}


def random_body(rng: random.Random, batch: bool) -> bytes:
    if rng.random() < 0.03:
        return rng.choice([b"", b"{", b"[1,", b'{"customer_age": NaN}', b"\xff\xfe", b"[" * 2000])
    if not batch:
        return json.dumps(random_row(rng, 0, 0.5)).encode()
    n = rng.choice([0, 1, 2, 5, 9, 20, 40, 51])
    bad = rng.choice([0.0, 0.0, 0.05, 0.5])
    rows = [random_row(rng, i, bad) if bad else {"request_id": f"id-{i}", **random_record(rng)} for i in range(n)]
    if bad == 0.0 and rng.random() < 0.5:
        rows = [random_record(rng) for _ in range(n)]  # the bare body the msgspec decoder takes
    if rng.random() < 0.05 and rows:
        rows[-1] = json.loads(json.dumps(rows[0]))  # a repeated request_id (when the first has one)
    body: object = {"records": rows} if rng.random() < 0.2 else rows
    return json.dumps(body).encode()


def normalized(body: dict) -> dict:
    """The body without what differs between two calls: latency, generated request ids."""
    out = {k: v for k, v in body.items() if k != "latency_ms"}
    if "predictions" in out:
        out["predictions"] = [normalized(p) for p in out["predictions"]]
    rid = out.get("request_id")
    if isinstance(rid, str) and not rid.startswith("id-"):
        out["request_id"] = "<generated>"
    return out


def assert_same(a: dict, b: dict, where: str) -> None:
    """Equal bodies; probabilities within 1e-6 (ONNX, XGBoost and the compiled trees may differ by float rounding)."""
    pa = [p.pop("probability") for p in a.get("predictions", [a])] if "error" not in a else []
    pb = [p.pop("probability") for p in b.get("predictions", [b])] if "error" not in b else []
    assert a == b, where
    assert len(pa) == len(pb) and all(math.isclose(x, y, rel_tol=0, abs_tol=1e-6) for x, y in zip(pa, pb)), where


def logged_records(state) -> list[dict]:
    """Every record an app's prediction log wrote, once flushed."""
    state.plog.flush()
    return state.store.find_predictions(None, None, 100_000)


@pytest.fixture
def two_apps(serving_settings, bundles):
    """(fast client, plain client): the same model, fast paths on and off."""
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager, ModelSet, load_model

    apps, closers = [], []
    for mode in ("on", "off"):
        s = serving_settings.model_copy(
            update={
                "fast_paths": mode,
                "native_batch_min_rows": 8,
                "compiled_trees": True,
                "state_dir": serving_settings.state_dir / mode,
            }
        )
        store = SQLiteStore(s.state_dir / "predictions.db")
        mm = ModelManager(s)
        mm.current = ModelSet(load_model(str(bundles["a"]), "champion", s), None, 0.0)
        app = create_app(s, store=store, models=mm, start_background=False)
        apps.append(app)
        closers.append((app.extensions["churn"].plog, store))
    fast, plain = apps
    assert fast.extensions["churn"].models.current.champion.bundle.batch_runtime == "compiled-trees"
    assert plain.extensions["churn"].models.current.champion.bundle.batch_runtime == "xgboost"
    assert type(fast.wsgi_app).__name__ == "FastPredict" and type(plain.wsgi_app).__name__ != "FastPredict"
    yield fast.test_client(), plain.test_client(), [a.extensions["churn"] for a in apps]
    for plog, store in closers:
        plog.close()
        store.close()


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_fast_and_plain_paths_answer_the_same(two_apps, path):
    fast, plain, states = two_apps
    rng = random.Random(f"fast-paths-{path}")
    statuses = {}
    for case in range(CASES):
        body = random_body(rng, path.endswith("batch"))
        a, b = post(fast, path, body), post(plain, path, body)
        where = f"case {case}: {body[:300]!r}"
        assert a.status_code == b.status_code, where
        assert_same(normalized(a.json), normalized(b.json), where)  # every case compares its whole body
        statuses[a.status_code] = statuses.get(a.status_code, 0) + 1
    # the random bodies cover both answers, in good measure
    assert statuses.get(200, 0) >= CASES // 4 and sum(v for k, v in statuses.items() if k >= 400) >= CASES // 4, (
        statuses
    )
    # and both logged the same clean features for the same predictions
    a, b = (
        sorted((json.dumps(r["features"], sort_keys=True), r["probability"]) for r in logged_records(st))
        for st in states
    )
    assert len(a) == len(b) >= CASES // 4
    assert [f for f, _ in a] == [f for f, _ in b]
    assert all(abs(x - y) <= 1e-6 for (_, x), (_, y) in zip(a, b))


def random_v2(rng: random.Random, case: int, model: str) -> tuple[str, bytes, dict]:
    """(path, body, headers) of a /v2 infer request: per-feature tensors of random (often bad) rows, or a
    broken request (wrong datatype, shape, name, output, model, version; not JSON; the binary extension)."""
    n = rng.choice([1, 1, 2, 3])
    rows = [random_record(rng) for _ in range(n)]
    for r in rows:
        if rng.random() < 0.3:
            rng.choice(MUTATIONS[:6])(r, rng)
    tensors = [
        {
            "name": name,
            "datatype": "FP64" if spec.kind == "numeric" else "BYTES",
            "shape": [n],
            "data": [r.get(name) for r in rows],
        }
        for name, spec in CONTRACT.features.items()
    ]
    body: dict = {
        "id": f"req-{case}",
        "inputs": tensors,
        "parameters": {"request_ids": [f"id-{case}-{i}" for i in range(n)]},
    }
    path, headers = f"/v2/models/{model}/infer", {}
    broken = rng.random()
    if broken < 0.05:
        tensors[0]["datatype"] = rng.choice(["FP16", "BOOL", "WHAT"])
    elif broken < 0.1:
        tensors[1]["shape"] = [n + 1]
    elif broken < 0.15:
        tensors.pop(rng.randrange(len(tensors)))
    elif broken < 0.2:
        body["outputs"] = [{"name": rng.choice(["nope", "explanations", "probability"])}]
    elif broken < 0.25:
        path = rng.choice(["/v2/models/nobody/infer", f"/v2/models/{model}/versions/7/infer"])
    elif broken < 0.3:
        return path, rng.choice([b"", b"{", b"[]", b'{"inputs": 3}', b"\xff"]), headers
    elif broken < 0.33:
        headers = {"Inference-Header-Content-Length": "10"}
    elif broken < 0.36:
        body["parameters"] = {"request_ids": ["stream:1"] * n}
    return path, json.dumps(body).encode(), headers


def test_fast_and_plain_v2_infer_answer_the_same(two_apps):
    """`POST /v2/models/{name}[/versions/{v}]/infer` through the fast path answers, logs and counts what the
    Flask view does."""
    from serving.metrics import get_metrics

    fast, plain, states = two_apps
    infer, answered_fast = fast.application.extensions["oip_infer"], []
    model = fast.application.extensions["oip"].default.name  # the line's name (the session may set MODEL_NAME)
    handler = infer.answer_fast

    def counted(*args):  # what the fast path answered (the Flask view does not call answer_fast)
        out = handler(*args)
        answered_fast.append(args[0])
        return out

    infer.answer_fast = counted
    rng = random.Random("fast-paths-v2")
    statuses: dict[int, int] = {}
    counter = get_metrics().http_requests.labels("/v2/models/<name>/infer", "POST", "200")
    for case in range(CASES // 2):
        path, body, headers = random_v2(rng, case, model)
        a = fast.post(path, data=body, content_type="application/json", headers=headers)
        b = plain.post(path, data=body, content_type="application/json", headers=headers)
        where = f"case {case}: {path} {body[:300]!r}"
        assert a.status_code == b.status_code, where
        ja, jb = a.json, b.json
        if a.status_code == 200:
            pa, pb = ([o["data"] for o in j["outputs"] if o["name"] == "probability"] for j in (ja, jb))
            assert len(pa) == len(pb), where
            assert all(math.isclose(x, y, abs_tol=1e-6) for x, y in zip(sum(pa, []), sum(pb, []))), where
            for j in (ja, jb):
                j["outputs"] = [o for o in j["outputs"] if o["name"] != "probability"]
        assert ja == jb, where
        statuses[a.status_code] = statuses.get(a.status_code, 0) + 1
    assert statuses.get(200, 0) >= CASES // 8 and sum(v for k, v in statuses.items() if k >= 400) >= CASES // 8, (
        statuses
    )
    logged = [
        sorted(
            (r["request_id"], json.dumps(r["features"], sort_keys=True))
            for r in logged_records(st)
            if r.get("protocol") == "v2"
        )
        for st in states
    ]
    assert logged[0] == logged[1] and len(logged[0]) >= CASES // 8  # the same rows, logged once each
    assert len(answered_fast) == statuses[200]  # every 200 came from the fast path; errors from the view
    one = {
        "inputs": [
            {"name": k, "datatype": "BYTES" if isinstance(v, str) else "FP64", "shape": [1], "data": [v]}
            for k, v in CONTRACT.example.items()
        ]
    }
    before = counter._value.get()
    ok = fast.post(f"/v2/models/{model}/infer", data=json.dumps(one), content_type="application/json")
    assert ok.status_code == 200, ok.json
    assert counter._value.get() == before + 1  # counted once, as Flask's after_request counts the view


def test_fast_paths_off_turns_every_one_off(serving_settings):
    """One setting: no fast record or column validator, no msgspec decoder, no WSGI fast path."""
    from churnops.speed import FastPaths

    off = serving_settings.model_copy(update={"fast_paths": "off"})
    fp = FastPaths.from_settings(CONTRACT, off)
    assert not fp.on and fp.decode_batch(b"[]") is None and fp.check_batch([CONTRACT.example]) is None
    app = object()
    assert fp.wrap_wsgi(app, lambda raw: raw, 10, lambda: None) is app
    on = FastPaths.from_settings(CONTRACT, serving_settings)
    assert on.on and on.check_batch([dict(CONTRACT.example)]) is not None


def test_server_with_fast_paths_off_answers_like_the_fast_app(real_server, bundles, tmp_path, two_apps):
    """The real server with FAST_PATHS=off runs the plain path and gives the fast app's answers
    (raw names included)."""
    import http.client
    import sys
    from pathlib import Path

    from ops.localservers import Server, free_port, wait_http
    from tests.support.serving import example

    root = Path(__file__).resolve().parents[2]
    fast, _, _ = two_apps
    port = free_port()
    env = {
        "MODEL_URI": str(bundles["a"]),
        "FAST_PATHS": "off",
        "NATIVE_BATCH_MIN_ROWS": "8",
        "STATE_DIR": str(tmp_path / "state"),
        "API_PORT": str(port),
        "API_WORKERS": "1",
        "CANARY_FRACTION": "0",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        "ADMIN_TOKEN": "test-admin",
        "PYTHONPATH": str(root),
    }
    srv = Server(
        [sys.executable, "-m", "serving.server"],
        tmp_path / "server.log",
        env=env,
        cwd=root,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", 90, srv.proc, tmp_path / "server.log")
        raw = {RAW[k]: v for k, v in example().items() if k in RAW} | {
            k: v for k, v in example().items() if k not in RAW
        }
        bodies = [
            ("/predict", {"request_id": "id-1", "features": example()}),
            ("/predict", {"request_id": "id-2", "features": raw}),
            ("/predict", example(customer_age=300)),
            ("/predict/batch", [{"request_id": f"id-{i}", **example(customer_age=20 + i)} for i in range(12)]),
            ("/predict/batch", [raw, example(gender="x")]),
        ]
        for path, body in bodies:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            r = c.getresponse()
            got = (r.status, json.loads(r.read()))
            c.close()
            want = post(fast, path, body)
            assert got[0] == want.status_code, (path, got)
            assert_same(normalized(got[1]), normalized(want.json), f"{path} {body}")
    finally:
        srv.stop()
