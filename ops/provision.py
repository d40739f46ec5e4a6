"""`make init_aws`: bucket, streams and the first clean snapshot on the S3/Kinesis endpoint."""

from __future__ import annotations

import logging
import sys

from churnops.aws import ensure_bucket, ensure_streams
from churnops.cleaning import check_raw_frame
from churnops.cli import fail, setup_logging
from churnops.contract import ContractViolation, load_contract
from churnops.feature_store import put_snapshot
from churnops.settings import Settings, get_settings
from churnops.sources import load_raw

log = logging.getLogger(__name__)


def init_aws(settings: Settings | None = None, data: str | None = None):
    """Bucket + streams + a validated clean snapshot of the configured data."""
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
