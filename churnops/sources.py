"""Where raw data comes from: a local path, s3://bucket/key, https://..., or the generator."""

from __future__ import annotations

import io
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from churnops.aws import client, describe_endpoint_error
from churnops.datasets_bundled import bundled_frame
from churnops.s3keys import UnsafeKeyError, split_s3_uri
from churnops.settings import Settings, get_settings
from churnops.synthetic import generate_customers

log = logging.getLogger(__name__)


class DataSourceError(ValueError):
    """The data source is missing, empty, unreadable or unreachable; the message names it."""


@dataclass
class RawData:
    frame: pd.DataFrame
    source: str  # what was read, as given
    synthetic: bool  # True when the generator made it


def _parse_csv(payload: bytes, where: str) -> pd.DataFrame:
    if not payload.strip():
        raise DataSourceError(f"{where}: file is empty (0 data bytes)")
    try:
        df = pd.read_csv(io.BytesIO(payload))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataSourceError(f"{where}: not a readable CSV ({type(exc).__name__}: {exc})") from exc
    if df.empty or len(df.columns) < 2:
        raise DataSourceError(f"{where}: CSV has no data rows or fewer than 2 columns")
    return df


def read_bytes(uri: str, settings: Settings | None = None) -> bytes:
    """Bytes behind a path, s3:// or http(s):// URI; errors name the URI."""
    s = settings or get_settings()
    if uri.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            bucket, key = split_s3_uri(uri, "DATA")
        except UnsafeKeyError as exc:
            raise DataSourceError(str(exc)) from exc
        try:
            return client("s3", s).get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            raise DataSourceError(f"{uri}: {exc.response.get('Error', {}).get('Code', exc)}") from exc
        except BotoCoreError as exc:
            raise DataSourceError(f"{uri}: {describe_endpoint_error(exc, s)}") from exc
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri, timeout=30) as resp:  # noqa: S310 (user-given URL)
                return resp.read()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise DataSourceError(f"{uri}: download failed ({exc})") from exc
    p = Path(uri).expanduser()
    if not p.exists():
        raise DataSourceError(f"{p}: data file not found")
    if p.is_dir():
        raise DataSourceError(f"{p}: is a directory, expected a CSV file")
    return p.read_bytes()


def load_raw(settings: Settings | None = None, data: str | None = None) -> RawData:
    """Read the configured raw data; with no DATA, generate synthetic customers (logged as such)."""
    s = settings or get_settings()
    uri = data if data is not None else s.data
    if uri:
        return RawData(_parse_csv(read_bytes(uri, s), uri), uri, synthetic=False)

    bundled = bundled_frame(s.dataset)
    if bundled is not None:  # a real data set shipped with an installed package (e.g. diabetes)
        log.info("no DATA given: using the bundled %s data set (%d rows)", s.dataset, len(bundled))
        return RawData(bundled, f"bundled:{s.dataset}", synthetic=False)
    if s.dataset != "bank_churners":
        raise DataSourceError(
            f"DATASET={s.dataset} needs DATA=path|s3://...|https://...: the synthetic generator only "
            "knows the bank_churners schema (bundled data sets: diabetes)"
        )

    log.warning("no DATA given: using SYNTHETIC customers (seed %s, %s rows)", s.seed, s.synthetic_rows)
    return RawData(generate_customers(s.synthetic_rows, seed=s.seed), "synthetic", synthetic=True)
