"""Image data set versions in the feature store (moto S3): publish once, fetch checked by hash."""

from __future__ import annotations

import pytest


@pytest.fixture
def s3_settings(moto_endpoint, tmp_path):
    from churnops.settings import Settings

    return Settings(_env_file=None, aws_endpoint_url=moto_endpoint, bucket="image-fs-test", state_dir=tmp_path / "a")


def test_publish_fetch_round_trip_and_refusals(s3_settings, raw_folder, raw_contract, tmp_path):
    from churnops.aws import client
    from churnops.image.dataset import ImageDataError, dataset_sha256, list_images
    from churnops.image.feature_store import fetch_images, put_images

    every = list_images(raw_folder, raw_contract)
    files = [f for k in range(10) for f in [g for g in every if g.label == k][:5]]  # the contract's minimum per class
    sha = dataset_sha256(files)
    uri = put_images(files, sha, raw_contract, s3_settings, "real")
    assert uri == f"s3://image-fs-test/images/raw_digits/{sha}"
    root, manifest = fetch_images(uri, raw_contract, s3_settings)
    assert manifest["files"] == [f.rel for f in files] and manifest["data_source"] == "real"
    assert [(root / f.rel).read_bytes() for f in files] == [f.path.read_bytes() for f in files]
    assert dataset_sha256(list_images(root, raw_contract)) == sha

    # a version never changes: publishing the same version again writes nothing
    s3 = client("s3", s3_settings)
    key = f"images/raw_digits/{sha}/{files[0].rel}"
    s3.put_object(Bucket="image-fs-test", Key=key, Body=b"tampered")
    assert put_images(files, sha, raw_contract, s3_settings, "real") == uri
    assert s3.get_object(Bucket="image-fs-test", Key=key)["Body"].read() == b"tampered"
    # ... and a tampered object is caught on the way back (a fresh state folder downloads again)
    fresh = s3_settings.model_copy(update={"state_dir": tmp_path / "b"})
    with pytest.raises(ImageDataError, match="the files hash to"):
        fetch_images(uri, raw_contract, fresh)
    with pytest.raises(ImageDataError, match="not a published data set"):
        fetch_images("s3://image-fs-test/images/raw_digits/nothing-here", raw_contract, fresh)
    with pytest.raises(ImageDataError, match="contract 'raw_digits', not 'other'"):
        fetch_images(uri, raw_contract.model_copy(update={"name": "other"}), fresh)
