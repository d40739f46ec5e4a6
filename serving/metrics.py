"""Prometheus metrics of the servers; multiprocess-safe under gunicorn.

With `PROMETHEUS_MULTIPROC_DIR` set (the gunicorn config sets and empties it at start), every
worker writes its samples to files there and `/metrics` aggregates them, so a scrape that hits
any worker sees the counts of all of them. Without it (tests, the consumer) the default
in-process registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.5)
# a regression's predicted values: any scale, so a 1-2.5-5 series (sum / count give the mean)
VALUE_BUCKETS = (0.0, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 1e4, 1e5, 1e6)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        kw = {"registry": registry} if registry is not None else {}
        self.predictions = Counter(
            "churn_predictions_total", "Predictions served", ["source", "route", "model_version", "decision"], **kw
        )
        self.latency = Histogram(
            "churn_prediction_latency_seconds",
            "Prediction latency (validation to response)",
            ["source", "route"],
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.probability = Histogram(
            "churn_prediction_probability",
            "Predicted churn probability",
            ["route"],
            buckets=[i / 10 for i in range(1, 11)],
            **kw,
        )
        self.predicted_value = Histogram(
            "churn_predicted_value",
            "Predicted value of a regression model",
            ["route"],
            buckets=VALUE_BUCKETS,
            **kw,
        )
        self.rejections = Counter("churn_rejections_total", "Rejected inputs by reason", ["source", "reason"], **kw)
        self.http_requests = Counter(
            "churn_http_requests_total", "HTTP requests", ["endpoint", "method", "status"], **kw
        )
        self.log_records = Counter(
            "churn_prediction_log_records_total",
            "Prediction-log records by outcome (written, spooled, replayed, quarantined, dropped)",
            ["outcome"],
            **kw,
        )
        self.model_reloads = Counter("churn_model_reloads_total", "Model reload attempts", ["result"], **kw)
        self.shadow = Counter(
            "churn_shadow_requests_total",
            "Shadow mirrors to the candidate by outcome (logged, dropped_queue_full, no_candidate, failed)",
            ["outcome"],
            **kw,
        )
        self.stream_records = Counter(
            "churn_stream_records_total",
            "Stream records by outcome (result, dead_letter, outbox, rejected)",
            ["outcome"],
            **kw,
        )
        self.stream_retries = Counter(
            "churn_stream_retries_total",
            "Stream calls that failed and were retried after a backoff",
            ["operation"],
            **kw,
        )
        self.stream_checkpoints_discarded = Counter(
            "churn_stream_checkpoints_discarded_total",
            "Shard checkpoints discarded as not fitting the stream",
            ["reason"],
            **kw,
        )
        gauge_kw = dict(kw)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            gauge_kw["multiprocess_mode"] = "liveall"
        self.stream_outbox = Gauge(
            "churn_stream_outbox_entries",
            "Results and dead letters waiting in a consumer's outbox (read when scraped)",
            **gauge_kw,
        )
        self.stream_lag = Gauge(
            "churn_stream_lag_seconds",
            "How far a shard's last read is behind the stream's newest record (Kinesis MillisBehindLatest)",
            ["shard"],
            **gauge_kw,
        )
        self.model_info = Gauge(
            "churn_model_loaded",
            "1 for each loaded model (route, run id, version)",
            ["route", "run_id", "version"],
            **gauge_kw,
        )


_METRICS: Metrics | None = None


def get_metrics() -> Metrics:
    """The process-wide metrics (created once; prometheus forbids duplicate names)."""
    global _METRICS
    if _METRICS is None:
        d = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if d:
            os.makedirs(d, exist_ok=True)
        _METRICS = Metrics()
    return _METRICS


def render() -> tuple[bytes, str]:
    """Exposition text: aggregated over workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
