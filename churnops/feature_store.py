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

from churnops.contract import DatasetContract
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
    clean: pd.DataFrame, contract: DatasetContract, source: str, synthetic: bool, settings: Settings | None = None
) -> Snapshot:
    """Upload `clean` unless identical content is already stored; move `latest` to it."""
    from botocore.exceptions import ClientError

    from churnops.aws import client

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
    from churnops.aws import client

    s = settings or get_settings()
    body = client("s3", s).get_object(Bucket=s.bucket, Key=f"{_prefix(s, contract)}/latest.json")["Body"].read()
    return Snapshot(**json.loads(body))


def read_snapshot(snap: Snapshot, contract: DatasetContract, settings: Settings | None = None) -> pd.DataFrame:
    """Download a snapshot, verify its SHA-256, return the clean frame with contract dtypes."""
    from churnops.aws import client

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
