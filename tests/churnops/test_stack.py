"""The embedded stack's supervisor config and its port-conflict message."""

from __future__ import annotations

import socket
import subprocess
import sys

from churnops.settings import Settings


def test_config_names_every_service_and_port(tmp_path):
    from churnops import services
    from churnops.stack import BIN, render_config

    s = Settings(state_dir=tmp_path, aws_endpoint_url="http://127.0.0.1:4566", mlflow_tracking_uri="http://127.0.0.1:5051",
                 prefect_api_url="http://127.0.0.1:4200/api", work_pool="churn-local", _env_file=None)
    conf = render_config(s)
    for name in ("moto", "mlflow", "prefect-server", "prefect-worker"):
        assert f"[program:{name}]" in conf
    # the supervisor runs the console scripts the Docker image runs; they rebuild the argv from these settings
    for script in ("churnops-moto", "churnops-mlflow", "churnops-prefect-server", "churnops-prefect-worker"):
        assert f"command={BIN / script}" in conf and (BIN / script).exists()
    assert "-p 4566" in conf and f'STATE_DIR="{tmp_path.resolve()}"' in conf and 'WORK_POOL="churn-local"' in conf
    mlflow = services.mlflow_argv(s)
    assert mlflow[mlflow.index("--port") + 1] == "5051" and mlflow[mlflow.index("--host") + 1] == "127.0.0.1"
    assert mlflow[mlflow.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    prefect = services.prefect_server_argv(s)
    assert prefect[prefect.index("--port") + 1] == "4200"
    worker = services.prefect_worker_argv(s)
    assert worker[worker.index("--pool") + 1] == "churn-local"


def test_compose_settings_change_the_service_command_lines(tmp_path):
    from churnops import services

    s = Settings(state_dir=tmp_path, mlflow_tracking_uri="http://mlflow:5051", bind_host="0.0.0.0",
                 mlflow_backend_store_uri="postgresql://churn:pw@postgres:5432/mlflow",
                 mlflow_artifacts_destination="s3://bucket/mlflow", _env_file=None)
    argv = services.mlflow_argv(s)
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and argv[argv.index("--port") + 1] == "5051"
    assert argv[argv.index("--backend-store-uri") + 1] == "postgresql://churn:pw@postgres:5432/mlflow"
    assert argv[argv.index("--artifacts-destination") + 1] == "s3://bucket/mlflow"


def test_prometheus_program_only_when_the_binary_exists(tmp_path, monkeypatch):
    import churnops.stack as stack

    s = Settings(state_dir=tmp_path, prometheus_port=19090, _env_file=None)
    monkeypatch.setattr(stack.shutil, "which", lambda name: None)
    assert "prometheus" not in {p.name for p in stack.programs(s)}
    monkeypatch.setattr(stack.shutil, "which", lambda name: "/usr/bin/prometheus" if name == "prometheus" else None)
    prom = {p.name: p for p in stack.programs(s)}["prometheus"]
    assert prom.port == 19090 and prom.health == "http://127.0.0.1:19090/-/ready"
    assert f"--config.file={stack.PROJECT_ROOT / 'monitoring' / 'prometheus.local.yml'}" in prom.command
    assert "--web.listen-address=127.0.0.1:19090" in prom.command


def test_simulator_service_repeats_every_interval_and_survives_a_failed_round():
    import threading

    from churnops.services import repeat

    calls, stop = [], threading.Event()

    def run():
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit(1)  # a failed round (API down): the service goes on
        if len(calls) == 3:
            stop.set()
        return 0

    assert repeat(run, 0.01, stop) == 0 and len(calls) == 3
    assert repeat(lambda: 7, 0) == 7  # interval 0: one round, its exit code


def test_up_refuses_a_port_taken_by_someone_else(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "STATE_DIR": str(tmp_path),
               "ENV_FILE": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-m", "churnops.stack", "up", "--timeout", "5"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    assert f"{port} (moto)" in out.stderr and "already in use" in out.stderr
