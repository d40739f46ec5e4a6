"""Simulators: drift injection, pacing and bounds, delayed feedback; HTTP against a local fake API,
Kinesis against the real moto server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from simulators import traffic as T


@pytest.fixture(scope="module")
def contract():
    from churnops.contract import load_contract

    return load_contract("bank_churners")


@pytest.fixture(scope="module")
def pool(contract):
    return T.customer_pool(None, contract, source="generator", seed=3, n=3000)[0]


class FakeAPI:
    """Records POST /predict and /feedback bodies with arrival times; answers like the API."""

    def __init__(self):
        api = self
        self.predict, self.feedback = [], []
        self.lock = threading.Lock()

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with api.lock:
                    (api.predict if self.path == "/predict" else api.feedback).append((time.monotonic(), body))
                out = json.dumps({"request_id": body["request_id"], "probability": 0.1, "decision": 0}).encode()
                self.send_response(200 if self.path in ("/predict", "/feedback") else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def api():
    a = FakeAPI()
    yield a
    a.close()


def test_drift_kinds_change_what_they_say(pool, contract):
    rng = np.random.default_rng(0)
    base = pool.iloc[:2000].reset_index(drop=True)
    ones = np.ones(len(base))
    df, out, changed = T.apply_drift(base, ["shift"], ones, rng)
    assert np.allclose(df["total_trans_ct"], np.round(base["total_trans_ct"] * 0.6))
    df, _, _ = T.apply_drift(base, ["category"], ones, rng)
    assert (df["card_category"] == "blue").mean() < 0.6 < (base["card_category"] == "blue").mean()
    df, _, changed = T.apply_drift(base, ["missing"], ones, rng)
    assert df["education_level"].isna().mean() > base["education_level"].isna().mean() + 0.4
    df, out, changed = T.apply_drift(base, ["concept"], ones, rng)
    seg = (base["income_category"] == "less than $40k").to_numpy()
    assert (out[seg] == 1 - base["churn"].to_numpy()[seg]).all() and (out[~seg] == base["churn"].to_numpy()[~seg]).all()
    assert changed["concept"] == seg.sum() and (df[contract.feature_names].equals(base[contract.feature_names]))
    st = T.strengths(10, "gradual")
    assert st[0] == 0 and st[-1] == 1 and np.all(np.diff(st) > 0)
    assert T.strengths(10, "sudden", onset=0.5).tolist() == [0] * 5 + [1] * 5
    with pytest.raises(ValueError):
        T.parse_drift("shift,nonsense")
    with pytest.raises(ValueError):
        T.check_loopback("http://example.com:9696", "API")
    T.check_loopback("http://localhost:9696", "API")


def test_planned_records_pass_the_contract(pool, contract):
    from churnops.contract import validate_record

    recs, _ = T.plan_records(pool, contract, 300, seed=1, drift=["missing", "category", "shift"])
    assert len({r.request_id for r in recs}) == 300
    for r in recs:
        assert validate_record(r.features, contract, "reject").ok, r.features
    again, _ = T.plan_records(pool, contract, 300, seed=1, drift=["missing", "category", "shift"])
    assert [r.features for r in again] == [r.features for r in recs]  # seeded


def test_http_sim_count_rate_and_delayed_feedback(api, pool, contract):
    from simulators.http_sim import run_http

    st = run_http(
        None,
        contract,
        rate=100,
        seconds=None,
        count=40,
        seed=5,
        drift=["concept"],
        feedback_delay_s=0.4,
        api_url=api.url,
        pool=pool,
    )
    assert st.sent == 40 and st.counts["POST /predict 200"] == 40 and st.counts["POST /feedback 200"] == 40
    assert st.feedback_pending == 0 and st.drift["rows_changed"]["concept"] > 0
    sent_at = {b["request_id"]: t for t, b in api.predict}
    for t, b in api.feedback:
        assert t - sent_at[b["request_id"]] >= 0.39
    assert 0.3 <= api.predict[-1][0] - api.predict[0][0] <= 2.0  # ~100/s pacing
    # outcomes are the planned ones (concept segment flipped)
    recs, _ = T.plan_records(pool, contract, 40, 5, ["concept"], prefix="http")
    outcomes = {b["request_id"]: b["outcome"] for _, b in api.feedback}
    assert sorted(outcomes.values()) == sorted(r.outcome for r in recs)
    assert [b["features"] for _, b in api.predict] == [r.features for r in recs]


def test_http_sim_duration_bound(api, pool, contract):
    from simulators.http_sim import run_http

    t0 = time.monotonic()
    st = run_http(
        None, contract, rate=20, seconds=1.0, count=None, seed=6, drift=[], feedback=False, api_url=api.url, pool=pool
    )
    assert time.monotonic() - t0 < 3.0
    assert st.planned == 20 and 15 <= st.sent <= 20 and not api.feedback


def test_run_main_prints_summary(api, capsys, monkeypatch):
    from simulators.run import main

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    rc = main(
        [
            "--only",
            "http",
            "--count",
            "10",
            "--rate",
            "50",
            "--drift",
            "shift",
            "--feedback-delay",
            "0.1",
            "--api-url",
            api.url,
            "--source",
            "generator",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["results"]["http"]["counts"]["POST /predict 200"] == 10
    assert out["results"]["http"]["drift"]["rows_changed"] == {"shift": 10}


def test_kinesis_sim_on_moto(moto_endpoint, api, pool, contract, monkeypatch):
    from churnops.aws import client
    from churnops.settings import Settings
    from simulators.kinesis_sim import run_kinesis

    s = Settings(_env_file=None, aws_endpoint_url=moto_endpoint, input_stream="sim-test")
    kin = client("kinesis", s)
    kin.create_stream(StreamName="sim-test", ShardCount=1)
    for _ in range(50):
        if kin.describe_stream(StreamName="sim-test")["StreamDescription"]["StreamStatus"] == "ACTIVE":
            break
        time.sleep(0.1)
    st = run_kinesis(
        s,
        contract,
        rate=200,
        seconds=None,
        count=25,
        seed=7,
        drift=["missing"],
        feedback_delay_s=0.1,
        api_url=api.url,
        pool=pool,
    )
    assert st.counts["kinesis put ok"] == 25 and st.counts["POST /feedback 200"] == 25
    shard = kin.describe_stream(StreamName="sim-test")["StreamDescription"]["Shards"][0]["ShardId"]
    it = kin.get_shard_iterator(StreamName="sim-test", ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = [json.loads(r["Data"]) for r in kin.get_records(ShardIterator=it, Limit=100)["Records"]]
    assert len(records) == 25 and {r["request_id"] for r in records} == {b["request_id"] for _, b in api.feedback}
    assert sum(r["features"]["education_level"] == "Unknown" for r in records) >= 10


def test_command_line_options_fit_both_simulators():
    """The shared options of both command lines are exactly keyword arguments of both runners."""
    import argparse
    import inspect

    from churnops.settings import Settings
    from simulators.http_sim import add_common_args, common_options, run_http
    from simulators.kinesis_sim import run_kinesis

    p = argparse.ArgumentParser()
    add_common_args(p, Settings())
    opts = common_options(p.parse_args(["--drift", "shift", "--no-feedback", "--count", "7"]))
    assert opts["count"] == 7 and opts["feedback"] is False and opts["drift"] == ["shift"]
    inspect.signature(run_http).bind(None, None, **opts)
    inspect.signature(run_kinesis).bind(None, None, stream="s", **opts)
