"""The S3 feature store: cleaned snapshots addressed by the SHA-256 of their content.

A snapshot is the clean frame written as canonical CSV to
`s3://<bucket>/snapshots/<dataset>/<sha256>.csv` with metadata (source, synthetic, rows,
contract fingerprint); `snapshots/<dataset>/latest.json` points at the newest. Uploading the
same content again finds the object and does nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass

import pandas as pd

from churnops.aws import client
from churnops.contract import DatasetContract
from churnops.s3keys import check_key, split_s3_uri
from churnops.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    sha256: str
    key: str
    bucket: str
    rows: int
    source: str
    synthetic: bool
    dataset: str
    created: bool = False  # True when this call uploaded it

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def canonical_csv(clean: pd.DataFrame) -> bytes:
    """Deterministic CSV bytes of a clean frame (fixed float format, no index)."""
    return clean.to_csv(index=False, float_format="%.10g", lineterminator="\n").encode()


def content_sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _prefix(s: Settings, contract: DatasetContract) -> str:
    return f"{s.snapshot_prefix}/{contract.name}"


def put_snapshot(
    clean: pd.DataFrame,
    contract: DatasetContract,
    source: str,
    synthetic: bool,
    settings: Settings | None = None,
    extra_meta: dict[str, str] | None = None,
) -> Snapshot:
    """Upload `clean` unless identical content is already stored; move `latest` to it.

    `extra_meta` adds S3 metadata (e.g. a feedback snapshot's parent, window and row counts).
    """
    from botocore.exceptions import ClientError

    s = settings or get_settings()
    s3 = client("s3", s)
    payload = canonical_csv(clean)
    sha = content_sha256(payload)
    key = f"{_prefix(s, contract)}/{sha}.csv"
    snap = Snapshot(sha, key, s.bucket, len(clean), source, synthetic, contract.name)
    try:
        s3.head_object(Bucket=s.bucket, Key=key)
        log.info("snapshot %s already stored: no upload", snap.uri)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
        s3.put_object(
            Bucket=s.bucket,
            Key=key,
            Body=payload,
            ContentType="text/csv",
            Metadata={
                "sha256": sha,
                "rows": str(len(clean)),
                "source": source[:200],
                "synthetic": str(synthetic).lower(),
                "contract-sha256": contract.fingerprint(),
                **{k: str(v)[:500] for k, v in (extra_meta or {}).items()},
            },
        )
        snap.created = True
        log.info("uploaded snapshot %s (%d rows, synthetic=%s)", snap.uri, len(clean), synthetic)
    latest_key = f"{_prefix(s, contract)}/latest.json"
    body = json.dumps({k: v for k, v in asdict(snap).items() if k != "created"}).encode()
    current = None
    try:
        current = s3.get_object(Bucket=s.bucket, Key=latest_key)["Body"].read()
    except ClientError:
        pass
    if current != body:
        s3.put_object(Bucket=s.bucket, Key=latest_key, Body=body, ContentType="application/json")
    return snap


def latest_snapshot(contract: DatasetContract, settings: Settings | None = None) -> Snapshot:
    """The snapshot `latest.json` points at."""
    s = settings or get_settings()
    body = client("s3", s).get_object(Bucket=s.bucket, Key=f"{_prefix(s, contract)}/latest.json")["Body"].read()
    return Snapshot(**json.loads(body))


def read_snapshot(snap: Snapshot, contract: DatasetContract, settings: Settings | None = None) -> pd.DataFrame:
    """Download a snapshot, verify its SHA-256, return the clean frame with contract dtypes."""
    s = settings or get_settings()
    payload = client("s3", s).get_object(Bucket=snap.bucket, Key=snap.key)["Body"].read()
    got = content_sha256(payload)
    if got != snap.sha256:
        raise ValueError(f"{snap.uri}: content SHA-256 {got} does not match its key {snap.sha256}")
    dtypes = {n: (object if f.kind != "numeric" else "float64") for n, f in contract.features.items()}
    df = pd.read_csv(io.BytesIO(payload), dtype=dtypes, keep_default_na=False, na_values=[""])
    for n, f in contract.features.items():
        if f.kind != "numeric" and n in df:
            df[n] = df[n].astype(object).where(df[n].notna(), None)
    return df


def snapshot_at(uri: str, contract: DatasetContract, settings: Settings | None = None) -> Snapshot:
    """The stored snapshot at `s3://bucket/key` (or a bare SHA-256 under this data set's prefix)."""
    from botocore.exceptions import ClientError

    s = settings or get_settings()
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri, "snapshot")  # UnsafeKeyError (a ValueError) names a `..` segment
    else:
        bucket, key = s.bucket, check_key(f"{_prefix(s, contract)}/{uri}.csv", "snapshot")
    try:
        head = client("s3", s).head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        raise FileNotFoundError(f"snapshot s3://{bucket}/{key} not found at {s.aws_endpoint_url}") from exc
    meta = head.get("Metadata", {})
    sha = meta.get("sha256") or key.rsplit("/", 1)[-1].removesuffix(".csv")
    return Snapshot(
        sha,
        key,
        bucket,
        int(meta.get("rows", 0)),
        meta.get("source", ""),
        meta.get("synthetic") == "true",
        contract.name,
    )


def snapshot_metadata(snap: Snapshot, settings: Settings | None = None) -> dict[str, str]:
    """The S3 metadata stored with a snapshot (source, parent, window, counts, ...)."""
    s = settings or get_settings()
    return dict(client("s3", s).head_object(Bucket=snap.bucket, Key=snap.key).get("Metadata", {}))


def put_holdout(frame: pd.DataFrame, contract: DatasetContract, settings: Settings | None = None) -> str:
    """Store a held-out evaluation slice (content-addressed, never `latest`); returns its URI."""
    s = settings or get_settings()
    payload = canonical_csv(frame)
    key = f"{_prefix(s, contract)}/holdout/{content_sha256(payload)}.csv"
    client("s3", s).put_object(
        Bucket=s.bucket,
        Key=key,
        Body=payload,
        ContentType="text/csv",
        Metadata={
            "sha256": content_sha256(payload),
            "rows": str(len(frame)),
            "source": "feedback-holdout",
            "synthetic": "false",
        },
    )
    return f"s3://{s.bucket}/{key}"
