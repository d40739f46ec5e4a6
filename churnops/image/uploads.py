"""Images uploaded to `POST /predict/image`, kept in the feature store so their labels can train a model.

Off by default (`IMAGE_KEEP_UPLOADS=false`: the server keeps only a summary of each image). When
the operator turns it on, each upload is written once under its SHA-256,

    s3://<BUCKET>/uploads/<contract>/<sha256>.<ext>

and the logged prediction names that object in `image_uri`, as a stream record names its own.
Retention: at most `IMAGE_KEEP_MAX_COUNT` objects, none older than `IMAGE_KEEP_MAX_AGE_HOURS`
(the oldest go first); applied at most every `IMAGE_KEEP_SWEEP_S` seconds by the server, and by
`apply_retention` directly. A published data set version holds its own copies, so retention never
breaks a version.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from churnops.aws import client
from churnops.settings import Settings

log = logging.getLogger(__name__)

EXTENSIONS = {"image/x-adobe-dng": ".dng", "image/png": ".png", "image/jpeg": ".jpg"}


def upload_prefix(contract_name: str) -> str:
    return f"uploads/{contract_name}/"


def upload_key(contract_name: str, sha256: str, content_type: str) -> str:
    """The object key of an upload: content-addressed, so the same image is stored once."""
    return f"{upload_prefix(contract_name)}{sha256}{EXTENSIONS.get(content_type, '.bin')}"


def put_upload(s3, s: Settings, contract_name: str, data: bytes, sha256: str, content_type: str) -> str:
    """Write the image (once) and return its s3:// URI."""
    key = upload_key(contract_name, sha256, content_type)
    s3.put_object(Bucket=s.bucket, Key=key, Body=data, ContentType=content_type)
    return f"s3://{s.bucket}/{key}"


def list_uploads(s3, s: Settings, contract_name: str) -> list[dict]:
    """Every kept upload of the contract: [{Key, LastModified, Size}], oldest first."""
    out: list[dict] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s.bucket, Prefix=upload_prefix(contract_name)):
        out += page.get("Contents", [])
    return sorted(out, key=lambda o: (o["LastModified"], o["Key"]))


def apply_retention(s3, s: Settings, contract_name: str, now: float | None = None) -> list[str]:
    """Delete uploads beyond IMAGE_KEEP_MAX_COUNT (oldest first) or older than IMAGE_KEEP_MAX_AGE_HOURS;
    returns the deleted keys."""
    objs = list_uploads(s3, s, contract_name)
    now = time.time() if now is None else now
    cutoff = datetime.fromtimestamp(now - s.image_keep_max_age_hours * 3600.0, timezone.utc)
    old = [o for o in objs if o["LastModified"] < cutoff]
    young = [o for o in objs if o["LastModified"] >= cutoff]
    excess = max(0, len(young) - s.image_keep_max_count)
    doomed = [o["Key"] for o in old + young[:excess]]
    for i in range(0, len(doomed), 1000):
        s3.delete_objects(Bucket=s.bucket, Delete={"Objects": [{"Key": k} for k in doomed[i : i + 1000]]})
    if doomed:
        log.info("image uploads: %d deleted by retention (%d kept)", len(doomed), len(objs) - len(doomed))
    return doomed


class UploadKeeper:
    """The server's side: write each upload, apply retention now and then; never fails a prediction."""

    def __init__(self, s: Settings, contract_name: str) -> None:
        self.s, self.contract_name = s, contract_name
        self.s3 = client("s3", s, max_attempts=2, connect_timeout=2, read_timeout=10)
        self._lock = threading.Lock()
        self._last_sweep = 0.0

    def keep(self, data: bytes, sha256: str, content_type: str) -> str | None:
        """The upload's URI, or None (logged) when it could not be written."""
        try:
            uri = put_upload(self.s3, self.s, self.contract_name, data, sha256, content_type)
        except Exception as exc:  # the prediction is answered and logged anyway, without image_uri
            log.warning("image upload %s not kept: %s", sha256[:12], exc)
            return None
        self.maybe_sweep()
        return uri

    def maybe_sweep(self) -> None:
        with self._lock:
            if time.monotonic() - self._last_sweep < self.s.image_keep_sweep_s and self._last_sweep:
                return
            self._last_sweep = time.monotonic()
        try:
            apply_retention(self.s3, self.s, self.contract_name)
        except Exception as exc:
            log.warning("image upload retention failed: %s", exc)
