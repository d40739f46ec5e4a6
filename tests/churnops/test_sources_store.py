"""Data sources and the S3 feature store against a real moto server."""

from __future__ import annotations

import pandas as pd
import pytest

from churnops.sources import DataSourceError, load_raw


def test_missing_empty_corrupt_files_name_the_file(tmp_path, stack_env):
    with pytest.raises(DataSourceError, match="nope.csv: data file not found"):
        load_raw(stack_env, str(tmp_path / "nope.csv"))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataSourceError, match="empty.csv: file is empty"):
        load_raw(stack_env, str(empty))
    corrupt = tmp_path / "corrupt.csv"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary\xff\xfe")
    with pytest.raises(DataSourceError, match="corrupt.csv"):
        load_raw(stack_env, str(corrupt))
    with pytest.raises(DataSourceError, match="is a directory"):
        load_raw(stack_env, str(tmp_path))


def test_snapshot_is_content_addressed_and_idempotent(stack_env, real_data_path):
    from churnops.aws import client, ensure_bucket, ensure_streams
    from churnops.cleaning import check_raw_frame
    from churnops.contract import load_contract
    from churnops.feature_store import canonical_csv, content_sha256, latest_snapshot, put_snapshot, read_snapshot

    ensure_bucket(stack_env)
    streams = ensure_streams(stack_env)
    assert set(streams) == {"predictions", "results", "predictions-dlq"}
    assert ensure_streams(stack_env) == {k: "exists" for k in streams}
    c = load_contract()
    clean, report = check_raw_frame(pd.read_csv(real_data_path).head(1000), c, "head")
    first = put_snapshot(clean, c, "head", False, stack_env)
    again = put_snapshot(clean, c, "head", False, stack_env)
    assert first.sha256 == again.sha256 == content_sha256(canonical_csv(clean))
    assert again.created is False and first.key.endswith(f"{first.sha256}.csv")
    s3 = client("s3", stack_env)
    head = s3.head_object(Bucket=stack_env.bucket, Key=first.key)
    assert head["Metadata"]["sha256"] == first.sha256 and head["Metadata"]["rows"] == "1000"
    assert latest_snapshot(c, stack_env).sha256 == first.sha256
    back = read_snapshot(first, c, stack_env)
    assert back.shape == clean.shape
    assert back["education_level"].isna().sum() == clean["education_level"].isna().sum()
    pd.testing.assert_series_equal(back["credit_limit"], clean["credit_limit"])


def test_s3_uri_source_and_unreachable_endpoint(stack_env, tmp_path, monkeypatch):
    from churnops.aws import client, ensure_bucket
    from churnops.settings import Settings

    ensure_bucket(stack_env)
    client("s3", stack_env).put_object(Bucket=stack_env.bucket, Key="raw/x.csv", Body=b"a,b\n1,2\n3,4\n")
    raw = load_raw(stack_env, f"s3://{stack_env.bucket}/raw/x.csv")
    assert raw.frame.shape == (2, 2) and not raw.synthetic
    with pytest.raises(DataSourceError, match="NoSuchKey"):
        load_raw(stack_env, f"s3://{stack_env.bucket}/raw/missing.csv")
    dead = Settings(aws_endpoint_url="http://127.0.0.1:9", _env_file=None)
    with pytest.raises(DataSourceError, match="127.0.0.1:9"):
        load_raw(dead, "s3://b/k.csv")
