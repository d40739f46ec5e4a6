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


def test_repin_after_down_up_reaches_the_servers_under_the_real_supervisor(tmp_path, monkeypatch):
    """Pin A, up, down/up, pin B (the file), start: the program sees B, not the copy of A.

    `export_env` copies `.env.local` (RUN_ID=A) into the stack process before supervisord starts;
    the supervised programs must still read the pin from the file when they (re)start.
    """
    import os
    import time

    from churnops import stack
    from churnops.registry import write_env_value
    from churnops.settings import export_env, get_settings

    env_path, seen = tmp_path / ".env.test", tmp_path / "seen.txt"
    env_path.write_text("RUN_ID=run-a\n")
    for k in ("RUN_ID", "MODEL_URI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ENV_FILE", str(env_path))
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "st"))
    probe = ("import time; from churnops.settings import get_settings; "
             f"open({str(seen)!r}, 'w').write(str(get_settings().run_id)); time.sleep(120)")
    monkeypatch.setattr(stack, "programs", lambda s: [
        stack.Program("probe", [sys.executable, "-c", probe], None, None, startsecs=1)])

    def wait_seen(expected: str) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if seen.exists() and seen.read_text() == expected:
                break
            time.sleep(0.2)
        return seen.read_text() if seen.exists() else ""

    try:
        export_env()  # what every console script (make up/start-serve) does first
        assert os.environ["RUN_ID"] == "run-a"
        s = get_settings()
        assert stack.up(s, timeout=30) == 0
        assert wait_seen("run-a") == "run-a"
        stack.down(s)
        seen.unlink()
        assert stack.up(s, timeout=30) == 0
        assert wait_seen("run-a") == "run-a"
        write_env_value(env_path, "RUN_ID", "run-b")  # make pin / make rollback / a hand edit
        seen.unlink()
        assert stack.start(s, ["probe"], timeout=30) == 0
        assert wait_seen("run-b") == "run-b"
    finally:
        stack.down(get_settings())
        os.environ.pop("RUN_ID", None)
        get_settings.cache_clear()


def test_pin_problem_names_a_run_that_no_longer_exists(stack_env):
    from churnops.registry import client, pin_problem

    gone = stack_env.model_copy(update={"run_id": "0" * 32, "model_uri": None})
    msg = pin_problem(gone)
    assert msg is not None and "0" * 32 in msg and "does not exist" in msg and "make pin" in msg
    exp = client(stack_env).get_experiment_by_name("Default")
    run = client(stack_env).create_run(exp.experiment_id if exp else "0")
    assert pin_problem(stack_env.model_copy(update={"run_id": run.info.run_id, "model_uri": None})) is None
