"""The image data set in the feature store, like the tabular snapshots.

    s3://<BUCKET>/images/<contract>/<dataset sha256>/<class>/<file>   every file, as read
    s3://<BUCKET>/images/<contract>/<dataset sha256>/manifest.json    written last: the version's list

A version is immutable: its key is the SHA-256 over every file's relative path and bytes
(`churnops.image.dataset.dataset_sha256`), so writing it again is a no-op and reading it back is
checked against the same hash. The training flow publishes what it trains on and names the URI
in its lineage; `DATA=s3://…/images/<contract>/<sha>` trains on a published version. A version built
from `/feedback` labels (`churnops.image.labels`) names its `parent` version in the manifest.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from churnops.aws import client, ensure_bucket
from churnops.image.contract import ImageContract
from churnops.image.dataset import ImageDataError, ImageFile, dataset_sha256, list_images
from churnops.s3keys import UnsafeKeyError, check_key, split_s3_uri
from churnops.settings import Settings

MANIFEST = "manifest.json"


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ImageDataError(f"{uri}: expected s3://<bucket>/images/<contract>/<sha256>")
    try:
        bucket, prefix = split_s3_uri(uri.rstrip("/"), "DATA")
    except UnsafeKeyError as exc:
        raise ImageDataError(str(exc)) from exc
    return bucket, prefix


def _manifest_files(manifest: dict, uri: str) -> list[str]:
    """The manifest's relative file keys, each checked: they become paths under the state folder."""
    sha = str(manifest.get("dataset_sha256", ""))
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ImageDataError(f"{uri}: manifest dataset_sha256 {sha[:80]!r} is not a SHA-256 hex digest")
    files = manifest.get("files")
    if not isinstance(files, list):
        raise ImageDataError(f"{uri}: manifest files is not a list")
    try:
        return [check_key(rel, "manifest file") for rel in files]
    except UnsafeKeyError as exc:
        raise ImageDataError(f"{uri}: {exc}") from exc


def put_images(
    files: list[ImageFile], sha256: str, contract: ImageContract, s: Settings, source: str, extra: dict | None = None
) -> str:
    """Publish the data set version (once); returns its URI. `extra` joins the manifest (a labelled
    version names its `parent` version and the label window)."""
    from botocore.exceptions import ClientError

    ensure_bucket(s)
    s3 = client("s3", s)
    prefix = f"images/{contract.name}/{sha256}"
    try:
        s3.head_object(Bucket=s.bucket, Key=f"{prefix}/{MANIFEST}")
        return f"s3://{s.bucket}/{prefix}"  # already there: versions never change
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    for f in files:
        s3.put_object(Bucket=s.bucket, Key=f"{prefix}/{f.rel}", Body=f.path.read_bytes())
    manifest = {
        "contract": contract.name,
        "fingerprint": contract.fingerprint(),
        "dataset_sha256": sha256,
        "data_source": source,
        "files": [f.rel for f in files],
        **(extra or {}),
    }
    s3.put_object(Bucket=s.bucket, Key=f"{prefix}/{MANIFEST}", Body=json.dumps(manifest, indent=1).encode())
    return f"s3://{s.bucket}/{prefix}"


def fetch_images(uri: str, contract: ImageContract, s: Settings) -> tuple[Path, dict]:
    """Download a published version into the state folder (once); (folder, manifest), hash checked."""
    bucket, prefix = _split(uri)
    s3 = client("s3", s)
    try:
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}")["Body"].read())
    except Exception as exc:
        raise ImageDataError(f"{uri}: no readable {MANIFEST} ({type(exc).__name__}): not a published data set") from exc
    if manifest.get("contract") != contract.name:
        raise ImageDataError(f"{uri}: a data set of contract {manifest.get('contract')!r}, not {contract.name!r}")
    files = _manifest_files(manifest, uri)
    root = s.state_dir / "images" / "s3" / manifest["dataset_sha256"]
    done = root / ".complete"
    if not done.exists():
        for rel in files:
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(s3.get_object(Bucket=bucket, Key=f"{prefix}/{rel}")["Body"].read())
        got = dataset_sha256(list_images(root, contract))
        if got != manifest["dataset_sha256"]:
            raise ImageDataError(
                f"{uri}: the files hash to {got[:12]}, the manifest says {manifest['dataset_sha256'][:12]}"
            )
        done.write_text(json.dumps({"uri": uri}))
    return root, manifest
