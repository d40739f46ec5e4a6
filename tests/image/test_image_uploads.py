"""HTTP uploads kept in the feature store under their SHA-256 (IMAGE_KEEP_UPLOADS), and their retention.

The image server is the one of tests/image/conftest.py (`image_model`), on the session's moto S3;
the expected object key and bytes are computed here from the file sent, never by the serving code.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import pytest

from tests.support.image import serve

pytest.importorskip("torch", reason="the image extra is not installed (pip install -e .[image])")
pytest.importorskip("rawpy", reason="the image extra is not installed (pip install -e .[image])")


def objects(s, prefix: str) -> dict[str, bytes]:
    from churnops.aws import client

    s3 = client("s3", s)
    out = {}
    for o in s3.list_objects_v2(Bucket=s.bucket, Prefix=prefix).get("Contents", []):
        out[o["Key"]] = s3.get_object(Bucket=s.bucket, Key=o["Key"])["Body"].read()
    return out


@pytest.mark.parametrize("keep", [True, False])
def test_upload_kept_under_its_sha256_only_when_enabled(image_model, keep):
    from churnops.aws import ensure_bucket

    s = image_model["settings"].model_copy(
        update={"image_keep_uploads": keep, "bucket": f"uploads-{uuid.uuid4().hex[:8]}"}
    )
    ensure_bucket(s)
    app, c, store = serve(s)
    try:
        data = image_model["files"][3].path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        r = c.post("/predict/image", data=data, headers={"Content-Type": "image/x-adobe-dng", "X-Request-ID": "up-3"})
        assert r.status_code == 200, r.json
        app.extensions["churn"].plog.flush()
        (rec,) = [x for x in store.find_predictions(limit=10_000) if x["request_id"] == "up-3"]
        kept = objects(s, "uploads/")
        if keep:
            key = f"uploads/raw_digits/{sha}.dng"
            assert kept == {key: data}
            assert rec["image_uri"] == f"s3://{s.bucket}/{key}"
        else:
            assert kept == {} and "image_uri" not in rec
    finally:
        app.extensions["churn"].plog.close()
        store.close()


def test_retention_keeps_the_newest_n_and_drops_the_old(stack_env):
    from churnops.aws import client, ensure_bucket
    from churnops.image.uploads import apply_retention, list_uploads, put_upload

    s = stack_env.model_copy(update={"bucket": f"retention-{uuid.uuid4().hex[:8]}", "image_keep_max_count": 3})
    ensure_bucket(s)
    s3 = client("s3", s)
    keys = []
    for i in range(5):
        data = f"image {i}".encode()
        uri = put_upload(s3, s, "raw_digits", data, hashlib.sha256(data).hexdigest(), "image/png")
        keys.append(uri.removeprefix(f"s3://{s.bucket}/"))
    put_upload(s3, s, "other", b"x", hashlib.sha256(b"x").hexdigest(), "image/png")  # another contract's
    order = [o["Key"] for o in list_uploads(s3, s, "raw_digits")]
    assert sorted(order) == sorted(keys)
    deleted = apply_retention(s3, s, "raw_digits")
    assert deleted == order[:2]  # the two oldest beyond the count of 3
    assert [o["Key"] for o in list_uploads(s3, s, "raw_digits")] == order[2:]
    # age: all three are older than the limit an hour and a half from now
    later = (list_uploads(s3, s, "raw_digits")[-1]["LastModified"] + timedelta(hours=1.5)).timestamp()
    s_age = s.model_copy(update={"image_keep_max_age_hours": 1.0})
    assert sorted(apply_retention(s3, s_age, "raw_digits", now=later)) == sorted(order[2:])
    assert list_uploads(s3, s, "raw_digits") == [] and len(list_uploads(s3, s, "other")) == 1


def test_bundled_sample_is_a_raw_capture_of_the_contract(raw_contract):
    """`make demo-image` prints a curl line sending this file: the server must take it."""
    from churnops.settings import PROJECT_ROOT
    from flows.image_train_flow import SAMPLE_IMAGE
    from serving.image import DNG, decode

    img = decode((PROJECT_ROOT / SAMPLE_IMAGE).read_bytes(), DNG, raw_contract, "sample")
    assert img.x.shape == (3, 32, 32) and (img.width, img.height) == (32, 32) and img.content_type == DNG
