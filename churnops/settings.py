"""One typed settings object for every entry point.

Values come from the process environment first, then from `.env.local` (or `.env.cloud` when
`ENV=cloud`), then from the defaults below. Nothing here touches the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Set in every process the project starts (stack programs, test and benchmark servers, entry points).
# MLflow's telemetry client starts when `mlflow` is imported and rewrites os.environ from a thread
# (`_MLFLOW_TELEMETRY_SESSION_ID`), which broke `requests` iterating the environment; Prefect's
# client and server send analytics. Names checked in mlflow 3.17 (telemetry/utils.py: DO_NOT_TRACK
# must be "true") and prefect 3.8 (_internal/analytics, server/services/telemetry.py). MLflow's
# artifact-download progress bars (one per model load, mlflow/environment_variables.py) and its
# INFO lines ("Validating input example", "Waiting up to 300 seconds") are noise between the lines
# of `make demo` and in the servers' logs; its warnings stay, and so does the sweep's progress bar.
QUIET_ENV: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


def env_file() -> Path | None:
    """The dotenv file selected by `ENV` (`local` -> `.env.local`, `cloud` -> `.env.cloud`).

    `ENV_FILE` names another one; `ENV_FILE=` (set, empty: the Docker image) means none, the
    process environment only.
    """
    name = os.environ.get("ENV", "local").strip().lower() or "local"
    chosen = os.environ.get("ENV_FILE")
    if chosen is not None and not chosen.strip():
        return None
    return Path(chosen or PROJECT_ROOT / f".env.{name}")


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
    # MLflow's HTTP client in the servers (API, consumer, report server): seconds per request,
    # retries, backoff factor (integer seconds, doubled per retry). MLflow's own defaults
    # (120 s, 7 retries, factor 2) can hold a call for minutes; the servers export these instead.
    mlflow_http_request_timeout: int = 10
    mlflow_http_request_max_retries: int = 2
    mlflow_http_request_backoff_factor: int = 1
    # bind address of the MLflow and Prefect servers (Compose: 0.0.0.0 inside the container)
    bind_host: str = "127.0.0.1"
    mlflow_backend_store_uri: str | None = None  # default sqlite:///<state_dir>/mlflow/mlflow.db
    mlflow_artifacts_destination: str | None = None  # default <state_dir>/mlflow/artifacts (Compose: s3://)

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
    dlq_preview_bytes: int = 65_536  # payload bytes kept in a dead-letter entry (the rest: size + SHA-256)
    dlq_s3_payloads: bool = True  # store truncated payloads whole under s3://<bucket>/dead-letter/
    stream_put_retries: int = 5  # put_records retries of one batch before its rest goes to the outbox
    stream_backoff_max_s: float = 30.0  # cap of the consumer's exponential backoff on stream errors
    stream_outbox_dir: Path | None = None  # default <state_dir>/outbox

    # --- training ------------------------------------------------------------------------------
    # the data set's line (churnops/model_line.py resolves them from the contract where the data set
    # is chosen): empty = follow the contract (`churn-xgboost` / `churn-sweep` for churn). An explicit
    # MODEL_NAME must name a model of this contract (training and registration refuse another one)
    experiment_name: str | None = None
    model_name: str | None = None
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

    # --- governance (promotion rules, approval) ---------------------------------------------------
    rules_file: Path | None = None  # promotion rules YAML; default churnops/rules/<task>.yaml
    auto_approve: bool = False  # headless runs promote a challenger that passes every rule
    approval_timeout_s: float = 3600.0  # a paused training run waits this long for approve/reject
    # (0: no pause; the challenger stays `awaiting approval` until `make promote`)

    # --- fresh labels (make collect-labels) ---------------------------------------------------------
    label_policy: Literal["append", "sliding", "replace"] = "append"  # how new rows join the parent snapshot
    label_window_rows: int = 20_000  # sliding: keep the newest N rows
    label_holdout_fraction: float = 0.2  # newest labelled rows held out for evaluation
    label_lookback_hours: float = 24 * 30  # predictions this far before a label's window are joined
    label_min_rows: int = 50  # fewer joined labels: no new snapshot

    # --- deployments -------------------------------------------------------------------------
    work_pool: str = "churn-local"
    train_interval_hours: float = 6.0

    # --- serving pin ---------------------------------------------------------------------------
    run_id: str | None = None
    model_uri: str | None = None
    alias_poll_s: float = 5.0  # servers on models:/<name>@<alias> check the alias this often
    # models the HTTP API serves under /v2 (Open Inference Protocol, serving/oip.py) besides the default one
    # (comma-separated; each a data set or registered model name, `@<alias>` (default champion), `:<version>`,
    # or `=<absolute bundle folder>`), e.g. OIP_MODELS=diabetes,raw-digits-cnn@champion; empty: the default only
    oip_models: str = ""

    # --- serving (HTTP API, stream consumer, prediction log) -------------------------------------
    api_url: str = "http://127.0.0.1:9696"
    ready_timeout_s: float = 180.0  # make start-serve / demo wait this long for /ready (ops/ready.py)
    api_host: str = "127.0.0.1"
    api_port: int = 9696
    api_workers: int = 2
    # a request's headers and body must arrive within this many seconds of its first byte (nginx in
    # front answers 408 after it; under granian alone a slow client holds one of a worker's threads)
    api_read_timeout_s: float = 10.0
    # a starting API worker waits this long for its model before it takes connections (a replacement
    # worker takes no traffic while it loads); a failed load ends the wait at once (503 naming it)
    api_load_wait_s: float = 60.0
    # embedded stack: nginx in front of the API on api_port when installed ("off": the server there)
    api_proxy: Literal["auto", "off"] = "auto"
    api_internal_port: int = 9695  # the API server's loopback port behind nginx
    api_conn_per_client: int = Field(512, ge=1)  # nginx: open connections per client address (more: 429)
    # admin token of POST /model/reload; empty: generated once into <state_dir>/admin_token (see
    # churnops/admin.py); required (16+ characters) in env=cloud
    admin_token: str | None = None
    # scoped tokens (serving/guards.py): READ_TOKEN for GET /logs, /audit, /drift/report, /model and
    # FEEDBACK_TOKEN for POST /feedback; empty: open (env=local); required (16+ characters) in env=cloud
    read_token: SecretStr | None = None
    feedback_token: SecretStr | None = None
    # Host names the API answers (comma-separated, `*` = any); empty: the loopback names, API_HOST, API_URL's host
    allowed_hosts: str = ""
    canary_fraction: float = 0.0
    # ?explain=true (exact tree SHAP, churnops/explain.py) costs about a millisecond of trees per row and
    # more: a batch asking for explanations may hold at most this many rows (more: 413)
    explain_max_rows: int = Field(100, ge=1)
    # shadow traffic (serving/shadow.py): this fraction of /predict, /predict/batch and tabular /v2 infer
    # rows and of tabular stream records (by request id) is mirrored, after the answer, to the candidate
    # (the `challenger` alias of the row's line) and logged as route `shadow`; a bounded queue per process
    # (full: the mirror is dropped and counted), one worker thread
    shadow_fraction: float = Field(0.0, ge=0.0, le=1.0)
    shadow_queue_max: int = Field(1000, ge=1)  # mirrored requests waiting per process
    shadow_refresh_s: float = Field(30.0, gt=0)  # how often the shadow worker looks for a new candidate
    unknown_category: Literal["reject", "unknown"] = "reject"
    max_body_bytes: int = 1_000_000
    # image serving (DATASET=<image contract>): POST /predict/image bodies and stream image_uri objects
    # above this size are refused (413 / dead letter) without being read
    image_max_body_bytes: int = 20_000_000
    # buckets a stream record's image_uri may name (comma-separated); empty: BUCKET only
    image_uri_buckets: str = ""
    # keep each /predict/image upload in the feature store under its SHA-256 (s3://BUCKET/uploads/<contract>/),
    # named by its logged prediction so /feedback labels can train on it; off: only a summary is logged
    image_keep_uploads: bool = False
    image_keep_max_count: int = Field(10_000, ge=0)  # retention: newest N uploads kept
    image_keep_max_age_hours: float = Field(24.0 * 30, gt=0)  # retention: older uploads deleted
    image_keep_sweep_s: float = 60.0  # a server applies the retention at most this often
    # which artifact of the registered image model version serves: the float ONNX model, or the int8
    # one the flow logs beside it (`model_int8.onnx`); int8 refuses to load a version without one
    image_model_precision: Literal["float", "int8"] = "float"
    # image training (churnops/image/train.py): the fraction of each batch replaced by PNG/JPEG renders of
    # the same images (colours, inversion, colour maps, blur, scale; 0 = raw captures only), and the int8
    # quantization of the export (static: calibrated on training images; dynamic; off) with its gate
    image_standard_mix: float = Field(0.4, ge=0, le=1)
    image_quantization: Literal["static", "dynamic", "off"] = "static"
    image_int8_max_accuracy_drop: float = Field(0.005, ge=0)  # pooled over the test split and its variations
    image_int8_min_agreement: float = Field(0.99, ge=0, le=1)  # argmax agreement with float on the test split
    image_n_trials: int = Field(12, ge=1)  # the image sweep's trials (make demo-image, the image deployments)
    batch_row_limit: int = 1000
    # matrices of at least this many rows go to the booster's trees (compiled, else XGBoost's own
    # predictor) instead of ONNX: faster per row on real rows; ONNX answers one row (0: ONNX only)
    native_batch_min_rows: int = 128
    # evaluate the booster's batches with churnops.speed.forest (numba; ~1.8x XGBoost's predictor, checked
    # against it at load, XGBoost kept when unsupported or different)
    compiled_trees: bool = True
    # every fast path of churnops/speed (WSGI fast path, one-pass record and column validators,
    # msgspec batch parser, compiled trees, keep-alive worker) at once; "off": the plain path only
    fast_paths: Literal["on", "off"] = "on"
    mongodb_uri: str | None = None
    mongodb_db: str = "churn"
    prediction_db_path: Path | None = None  # embedded store file; default <state_dir>/predictions.db
    serving_state_file: Path | None = None  # the servers' shared reload target; default <state_dir>/serving-model.json
    spool_dir: Path | None = None  # default <state_dir>/spool
    log_flush_interval_s: float = 0.5
    log_batch_size: int = 500  # records per store call
    # records queued that wake the log writer before its interval: each wake-up costs the request
    # thread GIL hand-overs (waking per 500 records cost ~4% of batch throughput)
    log_wake_records: int = 20_000
    # prediction-log bounds (see serving/prediction_log.py): records queued in memory per process
    # (beyond it records are replayed from the journal), bytes in the spool folder (journal
    # segments and spool files of all processes), longest wait between tries of a dead store
    log_queue_max_records: int = 100_000
    spool_max_bytes: int = 1 << 30
    log_retry_max_s: float = 30.0
    log_journal: bool = True  # journal every record before its answer (crash-safe)
    consumer_batch_size: int = 500
    consumer_poll_interval_s: float = 0.2
    # shards are taken by lease (serving/leases.py): any number of consumers may run, join and die.
    # CONSUMER_INDEX is only a hint: the first outbox slot this consumer tries; CONSUMER_COUNT is ignored
    consumer_index: int = 0
    consumer_count: int = 1  # ignored (kept so that old env files still load)
    consumer_lease_s: float = Field(default=10.0, ge=0.5)  # a shard lease's duration (renewed every third)
    consumer_id: str = ""  # this consumer's name in the lease table (default <host>-<pid>-<random>)
    consumer_threads: int = 4  # shards one consumer process polls at once
    consumer_metrics_port: int = 9101  # each consumer serves /metrics on this + CONSUMER_INDEX (0: off)
    consumer_metrics_host: str = "127.0.0.1"

    # --- monitoring (reports, drift, retraining) -------------------------------------------------
    reports_dir: Path | None = None  # default <state_dir>/reports
    reports_port: int = 8888
    prometheus_port: int = 9090  # embedded stack: Prometheus (Debian package) when installed
    report_window_hours: float = 3.0
    report_interval_hours: float = 3.0
    report_min_rows: int = 200
    report_max_rows: int = 10_000
    psi_warn: float = 0.1
    psi_critical: float = 0.2
    drift_p_value: float = 0.05
    # image drift (DATASET=<image contract>): Wasserstein of per-image channel means (0..1 scale),
    # MMD permutation test on the logged embedding projections (churnops/image/monitor.py)
    image_wasserstein_warn: float = 0.02
    image_wasserstein_critical: float = 0.05
    image_mmd_p_value: float = 0.01
    image_mmd_permutations: int = 200
    image_mmd_max_rows: int = 500  # rows per side in the MMD (the kernel matrix is quadratic)
    image_accuracy_floor: float = 0.9  # realized accuracy on /feedback labels below this starts retraining
    retrain_cooldown_hours: float = 12.0
    auc_floor: float = 0.85
    estimated_auc_floor: float | None = Field(default=None, ge=0, le=1)  # CBPE AUC below it triggers (off: None)
    estimated_min_rows: int = Field(default=200, ge=10)  # scored rows a window needs for the CBPE estimate
    # data quality per window and feature (churnops/monitoring/quality.py): a feature fails above these
    quality_missing_increase: float = Field(default=0.1, ge=0, le=1)  # missing rate over the training one
    quality_out_of_range_rate: float = Field(default=0.05, ge=0, le=1)  # values outside the training min/max
    quality_unseen_rate: float = Field(default=0.01, ge=0, le=1)  # values in categories training never saw
    quality_rejection_rate: float = Field(default=0.05, ge=0, le=1)  # records rejected (API, consumers) per window
    retrain_on_quality_failure: bool = False  # a data-quality failure is a retraining reason (off: fix the data)
    rmse_ceiling: float | None = Field(default=None, gt=0)  # regression: realized RMSE above it triggers training
    rmse_ceiling_factor: float | None = Field(default=1.5, gt=0)  # ... else this factor x the run's test RMSE
    alert_webhook_url: str | None = None
    alert_timeout_s: float = 5.0
    alert_retries: int = 3
    # Alertmanager -> webhook receiver (reporting/alert_receiver.py) -> Slack
    slack_webhook_url: str | None = None  # the receiver posts here; unset: it answers 502 and Alertmanager retries
    alert_receiver_host: str = "127.0.0.1"
    alert_receiver_port: int = 9099
    alertmanager_port: int = 9093
    simulate_rate: float = 20.0  # records per second per simulator
    simulate_seconds: float = 30.0
    simulate_interval_s: float = 0.0  # > 0: the simulator services send a round every interval
    simulate_count: int | None = None
    simulate_drift: str | None = None  # shift|category|missing|concept (comma-separated)
    simulate_drift_mode: Literal["sudden", "gradual"] = "sudden"
    feedback_delay_s: float = 5.0
    reports_host: str = "127.0.0.1"
    report_keep: int = 100  # newest reports kept in reports_dir (0 = all); ~9 MB each
    retrain_min_critical_features: int = 2  # critical features that make the window critical
    training_deployment: str | None = None  # empty: the data set's own (`train-churn-model/<line>`)
    drift_cache_s: float = 60.0  # GET /drift/* recomputes at most this often
    # a monitoring window (GET /drift/*, report, trigger) reads at most the newest this many rows
    drift_max_rows: int = Field(100_000, ge=1)

    # --- embedded stack ----------------------------------------------------------------------
    state_dir: Path = PROJECT_ROOT / ".stack"
    # where the serving processes share the model they serve (serving-model.json) and reload jobs;
    # default state_dir. Compose: one volume mounted into the API and every consumer, so an admin
    # reload of the API is followed by all of them
    serving_state_dir: Path | None = None
    # `make down`: how long supervisord may take to stop everything before the survivors get SIGTERM,
    # then SIGKILL (each program's own stop timeout, gunicorn's graceful 30 s included, fits in it)
    stack_stop_timeout_s: float = 45.0

    def state_path(self, value: Path | None, default: str) -> Path:
        """`value` when set, else `<state_dir>/<default>`."""
        return Path(value) if value else self.state_dir / default

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


def quiet_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` (default: os.environ) with MLflow's telemetry and Prefect's analytics off."""
    return {**(os.environ if env is None else env), **QUIET_ENV}


def quiet_process() -> None:
    """Turn MLflow's telemetry and Prefect's analytics off in this process (before importing them)."""
    os.environ.update(QUIET_ENV)


def export_env() -> None:
    """Copy the selected dotenv file into os.environ (process env wins).

    Entry points call this before importing Prefect or MLflow, whose clients read
    PREFECT_API_URL / MLFLOW_TRACKING_URI from the environment, so `.env.local` drives them too.
    """
    path = env_file()
    if path is not None and path.exists():
        for key, value in dotenv_values(path).items():
            if value is not None and value != "":
                os.environ.setdefault(key.upper(), value)
    get_settings.cache_clear()


# what serving loads: written by `make pin` / `make rollback` / a hand edit of the dotenv file
PIN_KEYS = ("RUN_ID", "MODEL_URI")


def child_env() -> dict[str, str]:
    """The environment for long-lived children (supervisord and the servers it starts).

    The process environment minus the pin keys, which `export_env` may have copied from the
    dotenv file: a server reads them from the file when it starts, so the file stays the truth
    and a later `make pin` / `make rollback` / hand edit + `make start-serve` is what it serves.
    """
    return {k: v for k, v in os.environ.items() if k.upper() not in PIN_KEYS}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process (call `get_settings.cache_clear()` after changing env)."""
    path = env_file()
    return Settings(_env_file=path if path is not None and path.exists() else None)
