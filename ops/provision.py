"""`make init_aws`: bucket, streams and the first clean snapshot on the S3/Kinesis endpoint."""

from __future__ import annotations

import logging
import time

from churnops.settings import Settings, get_settings

log = logging.getLogger(__name__)


def ensure_bucket(settings: Settings | None = None) -> bool:
    """Create the feature-store bucket if missing; True when created."""
    from botocore.exceptions import ClientError

    from churnops.aws import client

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
    from churnops.aws import client

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


def init_aws(settings: Settings | None = None, data: str | None = None):
    """Bucket + streams + a validated clean snapshot of the configured data."""
    from churnops.cleaning import check_raw_frame
    from churnops.contract import ContractViolation, load_contract
    from churnops.feature_store import put_snapshot
    from churnops.sources import load_raw

    s = settings or get_settings()
    created = ensure_bucket(s)
    streams = ensure_streams(s)
    contract = load_contract(s.dataset)
    raw = load_raw(s, data)
    clean, report = check_raw_frame(raw.frame, contract, subject=raw.source)
    if not report.ok:
        raise ContractViolation(report)
    snap = put_snapshot(clean, contract, raw.source, raw.synthetic, s)
    return {"bucket_created": created, "streams": streams, "snapshot": snap}


def main() -> None:
    """Console entry point: print what was created and where."""
    import sys

    from churnops.cli import fail, setup_logging

    setup_logging()
    s = get_settings()
    try:
        out = init_aws(s)
    except Exception as exc:  # one readable line, no stack trace
        fail(exc, f"init_aws against {s.aws_endpoint_url}")
    snap = out["snapshot"]
    print(f"bucket  s3://{s.bucket} ({'created' if out['bucket_created'] else 'exists'})")
    for name, st in out["streams"].items():
        print(f"stream  {name} ({st})")
    tag = " SYNTHETIC" if snap.synthetic else ""
    print(f"snapshot {snap.uri} rows={snap.rows}{tag} ({'uploaded' if snap.created else 'unchanged, no upload'})")
    sys.stdout.flush()
