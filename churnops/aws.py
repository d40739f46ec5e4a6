"""boto3 clients built from settings (endpoint, region, credentials); created on demand only."""

from __future__ import annotations

from churnops.settings import Settings, get_settings


def client(service: str, settings: Settings | None = None, **config):
    """A boto3 client for `service` ("s3", "kinesis") against the configured endpoint."""
    import boto3
    from botocore.config import Config

    s = settings or get_settings()
    cfg = Config(
        connect_timeout=config.pop("connect_timeout", 3),
        read_timeout=config.pop("read_timeout", 20),
        retries={"max_attempts": config.pop("max_attempts", 2), "mode": "standard"},
        **config,
    )
    return boto3.client(service, config=cfg, **s.aws_kwargs())


def describe_endpoint_error(exc: Exception, settings: Settings | None = None) -> str:
    """One line naming the endpoint that failed and why."""
    s = settings or get_settings()
    return f"AWS endpoint {s.aws_endpoint_url or 'default AWS'} unreachable or failing: {type(exc).__name__}: {exc}"
