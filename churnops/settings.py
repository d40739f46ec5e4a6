"""One typed settings object for every entry point.

Values come from the process environment first, then from `.env.local` (or `.env.cloud` when
`ENV=cloud`), then from the defaults below. Nothing here touches the network.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def env_file() -> Path:
    """The dotenv file selected by `ENV` (`local` -> `.env.local`, `cloud` -> `.env.cloud`)."""
    name = os.environ.get("ENV", "local").strip().lower() or "local"
    return Path(os.environ.get("ENV_FILE", PROJECT_ROOT / f".env.{name}"))


class Settings(BaseSettings):
    """Every knob of the platform, typed, with the fixed ports of ARCHITECTURE.md as defaults."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, env_file_encoding="utf-8")

    env: Literal["local", "cloud"] = "local"

    # --- endpoints -------------------------------------------------------------------------
    aws_endpoint_url: str | None = "http://127.0.0.1:4566"
    aws_region: str = Field("us-east-1", validation_alias="AWS_DEFAULT_REGION")
    aws_access_key_id: str = "test"
    aws_secret_access_key: str = "test"
    mlflow_tracking_uri: str = "http://127.0.0.1:5051"
    prefect_api_url: str = "http://127.0.0.1:4200/api"

    # --- data --------------------------------------------------------------------------------
    data: str | None = Field(None, description="path | s3://bucket/key | https://... ; empty = synthetic")
    dataset: str = Field("bank_churners", description="contract name shipped in churnops/datasets or a file path")
    synthetic_rows: int = 10_127
    bucket: str = "churn-feature-store"
    snapshot_prefix: str = "snapshots"

    # --- streams -------------------------------------------------------------------------------
    input_stream: str = "predictions"
    output_stream: str = "results"
    dlq_stream: str = "predictions-dlq"
    stream_shards: int = 2

    # --- training ------------------------------------------------------------------------------
    experiment_name: str = "churn-sweep"
    model_name: str = "churn-xgboost"
    n_trials: int = 50
    seed: int = 42
    test_size: float = 0.15
    val_size: float = 0.15
    max_trees: int = 2000
    early_stopping_rounds: int = 50
    threshold_strategy: Literal["max_f1", "precision"] = "max_f1"
    target_precision: float = 0.9
    onnx_tolerance: float = 1e-4
    reference_sample_rows: int = 5000
    sweep_executor: Literal["local", "dask"] = "local"
    dask_address: str | None = Field(None, description="tcp://scheduler:8786; empty = local cluster")
    dask_workers: int = 2
    train_threads: int = 0  # 0 = all cores for the serial sweep

    # --- deployments -------------------------------------------------------------------------
    work_pool: str = "churn-local"
    train_interval_hours: float = 6.0

    # --- serving pin ---------------------------------------------------------------------------
    run_id: str | None = None
    model_uri: str | None = None

    # --- embedded stack ----------------------------------------------------------------------
    state_dir: Path = PROJECT_ROOT / ".stack"

    def aws_kwargs(self) -> dict:
        """Keyword arguments for boto3 clients."""
        kw = {
            "region_name": self.aws_region,
            "aws_access_key_id": self.aws_access_key_id,
            "aws_secret_access_key": self.aws_secret_access_key,
        }
        if self.aws_endpoint_url:
            kw["endpoint_url"] = self.aws_endpoint_url
        return kw


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process (call `get_settings.cache_clear()` after changing env)."""
    path = env_file()
    return Settings(_env_file=path if path.exists() else None)
