"""boto3 clients built from settings (endpoint, region, credentials); created on demand only."""

from __future__ import annotations

import time

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


def ensure_bucket(settings: Settings | None = None) -> bool:
    """Create the feature-store bucket if missing; True when created."""
    from botocore.exceptions import ClientError

    s = settings or get_settings()
    s3 = client("s3", s)
    try:
        s3.head_bucket(Bucket=s.bucket)
        return False
    except ClientError:
        kw = {}
        if s.aws_region != "us-east-1":
            kw["CreateBucketConfiguration"] = {"LocationConstraint": s.aws_region}
        s3.create_bucket(Bucket=s.bucket, **kw)
        return True


def ensure_streams(settings: Settings | None = None, wait_s: float = 30.0) -> dict[str, str]:
    """Create the input, output and dead-letter streams if missing; wait until ACTIVE."""
    s = settings or get_settings()
    kin = client("kinesis", s)
    status = {}
    for name in (s.input_stream, s.output_stream, s.dlq_stream):
        # asked one by one: list_streams pages (100 names) and would miss one on an endpoint with more
        try:
            kin.describe_stream_summary(StreamName=name)
            status[name] = "exists"
            continue
        except kin.exceptions.ResourceNotFoundException:
            pass
        try:
            kin.create_stream(StreamName=name, ShardCount=s.stream_shards if name == s.input_stream else 1)
            status[name] = "created"
        except kin.exceptions.ResourceInUseException:  # created meanwhile by another process
            status[name] = "exists"
    deadline = time.monotonic() + wait_s
    for name in status:
        while kin.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {name} not ACTIVE after {wait_s:.0f} s")
            time.sleep(0.2)
    return status
