"""A stream consumer serves its own /metrics (records by outcome, lag, retries) on port + index."""

from __future__ import annotations

import socket
import urllib.request

from churnops.settings import Settings
from ops.localservers import free_port
from serving.consumer_metrics import metrics_port, serve_metrics
from serving.metrics import get_metrics


def test_consumer_serves_metrics_on_its_own_port(tmp_path):
    from serving.outbox import Outbox

    base = free_port()
    s = Settings(_env_file=None, consumer_metrics_port=base, consumer_index=0)
    assert metrics_port(Settings(_env_file=None, consumer_metrics_port=9101, consumer_index=1)) == 9102
    assert metrics_port(Settings(_env_file=None, consumer_metrics_port=0)) is None
    m = get_metrics()
    m.stream_records.labels("dead_letter").inc(3)
    m.stream_lag.labels("shardId-000000000007").set(12.5)
    outbox = Outbox(tmp_path / "outbox")
    outbox.add("results", [{"Data": b"a", "PartitionKey": "1"}, {"Data": b"b", "PartitionKey": "2"}])
    assert serve_metrics(s, outbox) == base
    with urllib.request.urlopen(f"http://127.0.0.1:{base}/metrics", timeout=10) as r:  # noqa: S310 (loopback)
        text = r.read().decode()
    assert 'churn_stream_lag_seconds{shard="shardId-000000000007"} 12.5' in text
    assert 'churn_stream_records_total{outcome="dead_letter"}' in text
    assert "churn_stream_outbox_entries 2.0" in text  # read from the outbox when scraped


def test_a_busy_port_is_logged_not_fatal(caplog):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        s = Settings(_env_file=None, consumer_metrics_port=port, consumer_index=0)
        assert serve_metrics(s) is None
    assert "consumer metrics not served" in caplog.text
