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


THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "SlowDown",
        "TooManyRequestsException",
        "KMSThrottlingException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying as they are: no connection, timeouts, throttling, 5xx answers."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, IncompleteReadError

    if isinstance(exc, (ConnectionError, HTTPClientError, IncompleteReadError, TimeoutError)):
        return True
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return err.get("Code") in THROTTLING_CODES or status >= 500
    return False


def backoff_delay(failures: int, base: float = 0.2, cap: float = 30.0) -> float:
    """Capped exponential backoff: `base` after the first failure, doubling, at most `cap` seconds."""
    return min(cap, base * 2 ** max(0, min(failures - 1, 30)))
