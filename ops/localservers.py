"""Start real local servers (moto, MLflow) as child processes: for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from churnops.settings import quiet_env
from ops.services import mlflow_server_argv, moto_server_argv

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll `url` until it answers below 500; raise with the log tail if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"server for {url} exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback)
                if r.status < 500:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


class Server:
    """A child process with its log file; stopped (whole process group) by `stop()`.

    Its environment is this process's, plus `env`, with MLflow's telemetry and Prefect's analytics off.
    """

    def __init__(self, args: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
        self.log = log
        self.fh = open(log, "w")
        self.proc = subprocess.Popen(
            args,
            stdout=self.fh,
            stderr=subprocess.STDOUT,
            env=quiet_env({**os.environ, **(env or {})}),
            cwd=cwd,
            start_new_session=True,
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


def start_moto(folder: Path) -> tuple[Server, str]:
    port = free_port()
    srv = Server(moto_server_argv("127.0.0.1", port), folder / "moto.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/moto-api/", 60, srv.proc, folder / "moto.log")
    return srv, url


def start_mlflow(folder: Path) -> tuple[Server, str]:
    port = free_port()
    argv = mlflow_server_argv("127.0.0.1", port, f"sqlite:///{folder}/mlflow.db", str(folder / "artifacts"))
    srv = Server(argv, folder / "mlflow.log", cwd=folder)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", 120, srv.proc, folder / "mlflow.log")
    return srv, url
