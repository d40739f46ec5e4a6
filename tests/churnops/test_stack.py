"""The embedded stack's supervisor config and its port-conflict message."""

from __future__ import annotations

import socket
import subprocess
import sys

from churnops.settings import Settings


def test_config_names_every_service_and_port(tmp_path):
    from churnops.stack import render_config

    s = Settings(state_dir=tmp_path, aws_endpoint_url="http://127.0.0.1:4566", mlflow_tracking_uri="http://127.0.0.1:5051",
                 prefect_api_url="http://127.0.0.1:4200/api", work_pool="churn-local", _env_file=None)
    conf = render_config(s)
    for name in ("moto", "mlflow", "prefect-server", "prefect-worker"):
        assert f"[program:{name}]" in conf
    assert "-p 4566" in conf and "--port 5051" in conf and "--port 4200" in conf
    assert f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db" in conf
    assert "--pool churn-local" in conf


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
