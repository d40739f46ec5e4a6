"""Shared fixtures: real local servers (moto S3/Kinesis, MLflow, Prefect test harness).

Session-scoped and started only when a test asks for them, each on a free port with its state
in a temporary folder, so the suite never touches a developer's running stack or `.env.local`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = ROOT.parent / "shared" / "data" / "bank_churners.csv"
BIN = Path(sys.executable).parent

# Never read the developer's .env.local during tests.
os.environ["ENV_FILE"] = str(ROOT / "tests" / ".env.test-does-not-exist")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"server for {url} exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


class Server:
    """A child process with its log file; stopped (whole process group) at teardown."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
        self.log = log
        self.fh = open(log, "w")
        self.proc = subprocess.Popen(
            args, stdout=self.fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            cwd=cwd, start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.fh.close()


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """A real moto server (S3 + Kinesis over HTTP) on a free port."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    srv = Server([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/moto-api/", 60, srv.proc, log)
    yield url
    srv.stop()


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory):
    """A real MLflow tracking server (SQLite, artifacts proxied) on a free port."""
    d = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    srv = Server(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{d}/mlflow.db", "--artifacts-destination", str(d / "artifacts"),
         "--serve-artifacts"],
        d / "mlflow.log", cwd=d,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", 120, srv.proc, d / "mlflow.log")
    yield url
    srv.stop()


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's own test harness: a temporary server and database for the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def stack_env(moto_endpoint, mlflow_uri):
    """Point settings at the test servers (unique bucket); yields the Settings object."""
    from churnops.settings import get_settings

    values = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "BUCKET": "test-feature-store",
        "MODEL_NAME": "churn-test",
        "EXPERIMENT_NAME": "churn-test",
    }
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    get_settings.cache_clear()
    yield get_settings()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def real_data_path() -> str:
    """The real BankChurners file beside the project (tests and benchmarks may read it)."""
    if not REAL_DATA.exists():
        pytest.skip(f"{REAL_DATA} not present")
    return str(REAL_DATA)


@pytest.fixture(scope="session")
def trained(stack_env, prefect_harness, real_data_path):
    """One small sweep on the real data through the real flow: the registered model's summary."""
    from churnops.provision import ensure_bucket, ensure_streams
    from flows.train_flow import train_flow

    ensure_bucket(stack_env)
    ensure_streams(stack_env)
    return train_flow(n_trials=6, data=real_data_path, data_profile=False)


@pytest.fixture
def tmp_env_file(tmp_path, monkeypatch):
    """A throwaway dotenv file selected through ENV_FILE."""
    from churnops.settings import get_settings

    p = tmp_path / ".env.local"
    monkeypatch.setenv("ENV_FILE", str(p))
    get_settings.cache_clear()
    yield p
    get_settings.cache_clear()
