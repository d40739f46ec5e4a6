"""A stream consumer's own `/metrics` (Prometheus text) on `CONSUMER_METRICS_PORT` + its index.

Records by outcome, lag per shard, retries, checkpoint discards, rejections and predictions
(`serving.metrics`) live in this process's default registry; Prometheus scrapes every consumer
(job `stream-consumer` in monitoring/prometheus*.yml). A port that cannot be bound is logged and
the consumer goes on: metrics never stop the stream.
"""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from serving.metrics import get_metrics

log = logging.getLogger(__name__)


def metrics_port(settings) -> int | None:
    """This consumer's metrics port (`consumer_metrics_port` + `consumer_index`); None when off (0)."""
    if not settings.consumer_metrics_port:
        return None
    return settings.consumer_metrics_port + settings.consumer_index


def serve_metrics(settings, outbox=None) -> int | None:
    """Start the `/metrics` server in a daemon thread; the port, or None (off, or it could not bind).

    `outbox` (a `serving.outbox.Outbox`): its size is read at each scrape."""
    port = metrics_port(settings)
    if port is None:
        return None
    if outbox is not None:
        try:
            get_metrics().stream_outbox.set_function(outbox.count)
        except ValueError as exc:  # a multiprocess registry has no callback gauges
            log.info("outbox size not exported: %s", exc)
    try:
        start_http_server(port, addr=settings.consumer_metrics_host)
    except OSError as exc:
        log.warning("consumer metrics not served on %s:%d: %s", settings.consumer_metrics_host, port, exc)
        return None
    log.info("consumer metrics on http://%s:%d/metrics", settings.consumer_metrics_host, port)
    return port
