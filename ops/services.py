"""The command line of every long-running service, in one place.

The embedded stack (`ops.stack`, under supervisord) and the Docker image (compose
`command:`) run the same console scripts (`churnops-mlflow`, `churnops-api`, ...); each script
builds its argv here from the settings and `exec`s the real server, so signals reach it
directly. Nothing here touches the network.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from churnops.settings import PROJECT_ROOT, QUIET_ENV, Settings, get_settings

BIN = Path(sys.executable).parent


def port_of(url: str, default: int = 80) -> int:
    """The port of a URL (`default` when it names none)."""
    return urlparse(url).port or default


def moto_server_argv(host: str, port: int) -> list[str]:
    """The S3 + Kinesis endpoint (`ops.motoserver`) on `host:port`; health at `/moto-api/`."""
    return [str(BIN / "churnops-moto"), "-H", host, "-p", str(port)]


def mlflow_server_argv(host: str, port: int, backend: str, artifacts: str) -> list[str]:
    """`mlflow server` (one worker, serving the artifacts it stores under `artifacts`); health at `/health`."""
    return [
        str(BIN / "mlflow"),
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts,
        "--serve-artifacts",
    ]


def mlflow_argv(s: Settings) -> list[str]:
    """`mlflow server` on the tracking URI's port; SQLite + local artifacts unless configured otherwise."""
    state = s.state_dir.resolve()
    backend = s.mlflow_backend_store_uri or f"sqlite:///{state}/mlflow/mlflow.db"
    artifacts = s.mlflow_artifacts_destination or str(state / "mlflow" / "artifacts")
    return mlflow_server_argv(s.bind_host, port_of(s.mlflow_tracking_uri), backend, artifacts)


def prefect_server_argv(s: Settings) -> list[str]:
    """`prefect server start` on the API URL's port (database: PREFECT_API_DATABASE_CONNECTION_URL or SQLite)."""
    return [str(BIN / "prefect"), "server", "start", "--host", s.bind_host, "--port", str(port_of(s.prefect_api_url))]


def prefect_worker_argv(s: Settings) -> list[str]:
    """A process worker polling WORK_POOL: it runs the project's flows."""
    return [str(BIN / "prefect"), "worker", "start", "--pool", s.work_pool, "--type", "process"]


def api_argv(s: Settings) -> list[str]:
    """The API server (serving/server.py: granian; bind and workers from API_HOST/API_PORT/API_WORKERS)."""
    return [sys.executable, "-m", "serving.server"]


def prometheus_argv(s: Settings, binary: str = "prometheus") -> list[str]:
    """The Prometheus binary (Debian package) scraping the local API with monitoring/prometheus.local.yml."""
    return [
        binary,
        f"--config.file={PROJECT_ROOT / 'monitoring' / 'prometheus.local.yml'}",
        f"--storage.tsdb.path={s.state_dir.resolve() / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{s.prometheus_port}",
        "--storage.tsdb.retention.time=7d",
    ]


def alertmanager_argv(s: Settings, binary: str = "prometheus-alertmanager") -> list[str]:
    """Alertmanager (Debian package prometheus-alertmanager) routing to the local alert receiver
    with monitoring/alertmanager.local.yml; no cluster (one laptop)."""
    return [
        binary,
        f"--config.file={PROJECT_ROOT / 'monitoring' / 'alertmanager.local.yml'}",
        f"--storage.path={s.state_dir.resolve() / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{s.alertmanager_port}",
        "--cluster.listen-address=",
    ]


def prefect_env(s: Settings) -> dict[str, str]:
    """Environment of the Prefect server and worker (PREFECT_HOME under the state folder)."""
    return {"PREFECT_HOME": str(s.state_dir.resolve() / "prefect"), "PREFECT_API_URL": s.prefect_api_url, **QUIET_ENV}


def _exec(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Replace this process with `argv` (the environment gains `env` where not already set)."""
    for k, v in {**QUIET_ENV, **(env or {})}.items():
        os.environ.setdefault(k, v)
    sys.stdout.flush()
    os.execv(argv[0], argv + sys.argv[1:])


def mlflow_main() -> None:
    s = get_settings()
    if not s.mlflow_backend_store_uri:
        (s.state_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    _exec(mlflow_argv(s))


def prefect_server_main() -> None:
    s = get_settings()
    _exec(prefect_server_argv(s), prefect_env(s))


def prefect_worker_main() -> None:
    s = get_settings()
    _exec(prefect_worker_argv(s), prefect_env(s))


def api_main() -> None:
    _exec(api_argv(get_settings()))


def heartbeat_path(s: Settings) -> Path:
    """The file a long-running simulator touches at each round (its own health check reads it)."""
    return s.state_dir / "simulator.heartbeat"


def heartbeat_max_age_s(s: Settings) -> float:
    """Older than this, a simulator's heartbeat means it is stuck: two rounds and a minute."""
    return 2 * (max(s.simulate_interval_s, 0.0) + s.simulate_seconds) + 60.0


def touch(path: Path | None) -> None:
    """Write the current time into `path` (a heartbeat); a failure is reported, never raised."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{time.time():.3f}\n")
    except OSError as exc:
        print(f"WARNING: heartbeat {path}: {exc}", file=sys.stderr, flush=True)


def repeat(
    run: Callable[[], object], interval_s: float, stop: threading.Event | None = None, heartbeat: Path | None = None
) -> int:
    """Call `run` now and then every `interval_s` seconds until SIGTERM/SIGINT (once when `interval_s` <= 0).

    `heartbeat`: a file touched before the first round and after each one (`churnops-health heartbeat`).

    A run that fails (exception or non-zero exit) is reported and the next one still happens, so a
    long-running simulator service outlives an API restart. Returns the last run's exit code.
    """
    stop = stop or threading.Event()
    if interval_s > 0 and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    code = 0
    touch(heartbeat)
    while True:
        started = time.monotonic()
        try:
            result = run()
            code = result if isinstance(result, int) else 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception as exc:  # a long-running service reports and goes on
            print(f"ERROR: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            code = 1
        touch(heartbeat)
        if interval_s <= 0:
            return code
        if stop.wait(max(0.0, interval_s - (time.monotonic() - started))):
            return code
