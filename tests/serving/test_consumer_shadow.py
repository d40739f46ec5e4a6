"""Shadow traffic on the stream consumer: a real moto Kinesis, local model bundles, a SQLite log.

The candidate is found the way the servers find it (`serving.shadow.registry_candidate`, replaced here
by a local bundle): nothing in these tests hands the consumer its shadow worker.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.request

import numpy as np
import pytest

from ops.localservers import free_port
from tests.support.serving import example
from tests.support.streams import make_consumer, put, read_stream, stream_settings_for

N = 40


@pytest.fixture
def settings_in(moto_endpoint, tmp_path, monkeypatch):
    """settings_in(name, **over): stream settings with streams of their own and state in tmp_path/name."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    return lambda name, **over: stream_settings_for(moto_endpoint, tmp_path / name, **over)


def payloads() -> list[bytes]:
    """N records: most with a request id of their own, every fifth bare (its sequence number is its id)."""
    out = []
    for i in range(N):
        feats = example(customer_age=30 + i % 40, total_trans_ct=20 + i)
        out.append(json.dumps(feats if i % 5 == 4 else {"request_id": f"q{i:03d}", "features": feats}).encode())
    return out


def consume(settings, bundles, store, monkeypatch, candidate=None):
    """Put `payloads()` on the input stream, run a consumer until it idles; (consumer, its results by input
    position without their `ts`, the shard sequence numbers)."""
    from churnops.aws import client

    monkeypatch.setattr("serving.shadow.registry_candidate", lambda s, champion: candidate)
    kin = client("kinesis", settings)
    seqs = put(kin, settings, payloads())
    c = make_consumer(settings, bundles, store)
    c.run(max_idle_polls=3)
    return c, answers_by_position(kin, settings, seqs), seqs


def answers_by_position(kin, settings, seqs) -> list[dict]:
    """The results of the inputs put at `seqs`, in that order, without `ts` (the consumer's clock)."""
    got = {(r["shard_id"], r["sequence_number"]): r for r in read_stream(kin, settings.output_stream)}
    assert len(got) == len(seqs)
    out = []
    for q in seqs:
        r = dict(got[q])
        r.pop("ts")
        r.pop("sequence_number")  # the two streams number their records each on its own
        if r["request_id"] == q[1]:
            r["request_id"] = "<seq>"
        out.append(r)
    return out


def plain_run(settings_in, bundles, monkeypatch) -> list[dict]:
    """The same records through a consumer with SHADOW_FRACTION=0."""
    from churnops.store.sqlite import SQLiteStore

    s = settings_in("plain", shadow_fraction=0.0)
    store = SQLiteStore(s.state_dir / "p.db")
    try:
        c, answers, _ = consume(s, bundles, store, monkeypatch)
        assert c.shadow.thread is None  # fraction 0: no worker was even started
        assert {r["route"] for r in store.find_predictions()} == {"champion"}
        return answers
    finally:
        store.close()


def shadow_count(metrics, outcome: str) -> float:
    return metrics.shadow.labels(outcome)._value.get()


def test_every_stream_record_is_mirrored_under_the_champions_request_id(settings_in, bundles, monkeypatch):
    from churnops.store.sqlite import SQLiteStore
    from serving.consumer_metrics import serve_metrics
    from serving.metrics import get_metrics
    from serving.model import load_model

    candidate = load_model(str(bundles["b"]), "shadow")
    plain = plain_run(settings_in, bundles, monkeypatch)
    s = settings_in("shadow", shadow_fraction=1.0, consumer_metrics_port=free_port())
    store = SQLiteStore(s.state_dir / "p.db")
    logged_before = shadow_count(get_metrics(), "logged")
    c, answers, seqs = consume(s, bundles, store, monkeypatch, candidate)
    assert answers == plain  # the stream's output is the same with SHADOW_FRACTION=1 and 0

    recs = store.find_predictions()
    # paired by log `_id`: each champion entry has one shadow entry `<its _id>:shadow` (fixed per record, so a
    # re-emitted batch adds nothing), under the champion's request id
    champ = {r["_id"]: r for r in recs if r["route"] == "champion"}
    shadow = {r["_id"].removesuffix(":shadow"): r for r in recs if r["route"] == "shadow"}
    assert len(champ) == N and set(shadow) == set(champ) and len(recs) == 2 * N
    assert all(r["_id"].endswith(":shadow") for r in shadow.values())
    rids = {r["request_id"] for r in shadow.values()}
    assert {f"q{i:03d}" for i in range(N) if i % 5 != 4} | {q for i, (_, q) in enumerate(seqs) if i % 5 == 4} == rids
    keys = sorted(champ)
    expected = candidate.bundle.predict_records([champ[k]["features"] for k in keys])
    got = np.array([shadow[k]["probability"] for k in keys])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not np.allclose(got, [champ[k]["probability"] for k in keys], atol=1e-3)  # another model answered
    for k, r in shadow.items():
        assert r["request_id"] == champ[k]["request_id"] and r["features"] == champ[k]["features"]
        assert r["model_run_id"] == "localrun2" and champ[k]["model_run_id"] == "localrun1"
        assert r["source"] == "stream"
    assert shadow_count(c.metrics, "logged") == logged_before + N

    # the consumer's own /metrics shows the shadow counter
    port = serve_metrics(s)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:  # noqa: S310 (loopback)
        text = r.read().decode()
    assert 'churn_shadow_requests_total{outcome="logged"}' in text
    assert 'churn_shadow_requests_total{outcome="dropped_queue_full"}' in text
    store.close()


def test_a_raising_candidate_changes_neither_the_output_nor_the_checkpoints(settings_in, bundles, monkeypatch):
    from churnops.store.sqlite import SQLiteStore
    from serving.metrics import get_metrics
    from serving.model import load_model

    broken = load_model(str(bundles["b"]), "shadow")

    def boom(X):
        raise RuntimeError("candidate exploded")

    broken.bundle.predict_matrix = boom
    plain = plain_run(settings_in, bundles, monkeypatch)
    s = settings_in("broken", shadow_fraction=1.0)
    store = SQLiteStore(s.state_dir / "p.db")
    failed_before = shadow_count(get_metrics(), "failed")
    c, answers, seqs = consume(s, bundles, store, monkeypatch, broken)
    assert answers == plain
    last = {}
    for sh, q in seqs:
        last[sh] = q  # moto numbers grow per shard: the last put is the newest
    for sh, q in last.items():
        assert json.loads(c.leases.stored_checkpoint(sh))["seq"] == q
    assert shadow_count(c.metrics, "failed") == failed_before + N
    assert {r["route"] for r in store.find_predictions()} == {"champion"}
    store.close()


def test_a_hanging_candidate_drops_mirrors_and_holds_nothing_up(settings_in, bundles, monkeypatch):
    from churnops.aws import client
    from churnops.store.sqlite import SQLiteStore
    from serving.metrics import get_metrics
    from serving.model import load_model

    gate = threading.Event()
    stuck = load_model(str(bundles["b"]), "shadow")
    stuck.bundle.predict_matrix = lambda X: gate.wait(60) and np.zeros(len(X))
    monkeypatch.setattr("serving.shadow.registry_candidate", lambda s, champion: stuck)
    s = settings_in("stuck", shadow_fraction=1.0, shadow_queue_max=1, consumer_batch_size=5)
    kin = client("kinesis", s)
    store = SQLiteStore(s.state_dir / "p.db")
    seqs = put(kin, s, payloads())
    c = make_consumer(s, bundles, store)
    dropped_before = shadow_count(get_metrics(), "dropped_queue_full")
    try:
        c.refresh_shards()
        for _ in range(100):  # every batch while the worker hangs on the first mirror
            c.poll_once()
            if c.processed == N:
                break
        assert c.processed == N
        assert len(read_stream(kin, s.output_stream)) == N
        for sh in {sh for sh, _ in seqs}:
            assert json.loads(c.leases.stored_checkpoint(sh))["seq"] == [q for x, q in seqs if x == sh][-1]
        # at most one batch (5 rows) in the worker's hands and one in the queue: the rest dropped, counted
        assert shadow_count(c.metrics, "dropped_queue_full") - dropped_before >= N - 10
    finally:
        gate.set()
        c.shadow.stop()
        c.plog.close()
        store.close()


@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_only_the_sampled_request_ids_are_mirrored(fraction, settings_in, bundles, monkeypatch):
    from churnops.store.sqlite import SQLiteStore
    from serving.model import load_model

    s = settings_in(f"f{fraction}", shadow_fraction=fraction)
    store = SQLiteStore(s.state_dir / "p.db")
    consume(s, bundles, store, monkeypatch, load_model(str(bundles["b"]), "shadow"))
    recs = store.find_predictions()
    champ = {r["_id"]: r["request_id"] for r in recs if r["route"] == "champion"}
    shadow = {r["_id"].removesuffix(":shadow"): r["request_id"] for r in recs if r["route"] == "shadow"}
    assert len(champ) == N

    # sha256("shadow:" + request id) below the fraction, written out here
    def share(rid: str) -> float:
        return int.from_bytes(hashlib.sha256(f"shadow:{rid}".encode()).digest()[:8], "big") / 2.0**64

    assert shadow == {k: rid for k, rid in champ.items() if share(rid) < fraction}
    if fraction:
        assert 0 < len(shadow) < N
    store.close()
