"""The embedded stack: its supervisor config, port conflicts, `down` / `reset` / `up` on a real
supervisord with cheap programs, and telemetry off in the processes the project starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from churnops.settings import Settings


def test_config_names_every_service_and_port(tmp_path):
    from ops import services
    from ops.stack import BIN, render_config

    s = Settings(
        state_dir=tmp_path,
        aws_endpoint_url="http://127.0.0.1:4566",
        mlflow_tracking_uri="http://127.0.0.1:5051",
        prefect_api_url="http://127.0.0.1:4200/api",
        work_pool="churn-local",
        _env_file=None,
    )
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


def test_servers_get_the_data_set_and_model_start_serve_was_called_with(tmp_path, pristine_env):
    """`make demo-image` serves `DATASET=raw_digits MODEL_URI=models:/raw-digits-cnn@champion` through
    `start-serve` without editing `.env.local`: the servers' programs carry both; the others neither."""
    from ops import stack

    s = Settings(state_dir=tmp_path, dataset="raw_digits", model_uri="models:/raw-digits-cnn@champion", _env_file=None)
    progs = {p.name: p for p in stack.programs(s)}
    for name in ("api", "consumer"):
        assert progs[name].env["DATASET"] == "raw_digits"
        assert progs[name].env["MODEL_URI"] == "models:/raw-digits-cnn@champion"
    assert "DATASET" not in progs["prefect-worker"].env and "MODEL_URI" not in progs["mlflow"].env
    plain = {p.name: p for p in stack.programs(Settings(state_dir=tmp_path, _env_file=None))}
    assert plain["api"].env["DATASET"] == "bank_churners" and "MODEL_URI" not in plain["api"].env


def test_compose_settings_change_the_service_command_lines(tmp_path):
    from ops import services

    s = Settings(
        state_dir=tmp_path,
        mlflow_tracking_uri="http://mlflow:5051",
        bind_host="0.0.0.0",
        mlflow_backend_store_uri="postgresql://churn:pw@postgres:5432/mlflow",
        mlflow_artifacts_destination="s3://bucket/mlflow",
        _env_file=None,
    )
    argv = services.mlflow_argv(s)
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and argv[argv.index("--port") + 1] == "5051"
    assert argv[argv.index("--backend-store-uri") + 1] == "postgresql://churn:pw@postgres:5432/mlflow"
    assert argv[argv.index("--artifacts-destination") + 1] == "s3://bucket/mlflow"


def test_prometheus_program_only_when_the_binary_exists(tmp_path, monkeypatch):
    import ops.stack as stack

    s = Settings(state_dir=tmp_path, prometheus_port=19090, _env_file=None)
    monkeypatch.setattr(stack.shutil, "which", lambda name: None)
    assert "prometheus" not in {p.name for p in stack.programs(s)}
    monkeypatch.setattr(stack.shutil, "which", lambda name: "/usr/bin/prometheus" if name == "prometheus" else None)
    prom = {p.name: p for p in stack.programs(s)}["prometheus"]
    assert prom.port == 19090 and prom.health == "http://127.0.0.1:19090/-/ready"
    assert f"--config.file={stack.PROJECT_ROOT / 'monitoring' / 'prometheus.local.yml'}" in prom.command
    assert "--web.listen-address=127.0.0.1:19090" in prom.command


def test_alertmanager_and_receiver_programs_only_when_alertmanager_exists(tmp_path, monkeypatch):
    import ops.stack as stack

    s = Settings(state_dir=tmp_path, alertmanager_port=19093, alert_receiver_port=19099, _env_file=None)
    monkeypatch.setattr(stack.shutil, "which", lambda name: None)
    assert not {"alertmanager", "alert-receiver"} & {p.name for p in stack.programs(s)}
    am_bin = "/usr/bin/prometheus-alertmanager"
    monkeypatch.setattr(stack.shutil, "which", lambda name: am_bin if name == "prometheus-alertmanager" else None)
    progs = {p.name: p for p in stack.programs(s)}
    am, rcv = progs["alertmanager"], progs["alert-receiver"]
    assert am.command[0] == am_bin and am.health == "http://127.0.0.1:19093/-/ready"
    assert f"--config.file={stack.PROJECT_ROOT / 'monitoring' / 'alertmanager.local.yml'}" in am.command
    assert "--web.listen-address=127.0.0.1:19093" in am.command
    assert rcv.command[1:] == ["-m", "reporting.alert_receiver"] and rcv.health == "http://127.0.0.1:19099/health"


def test_simulator_service_repeats_every_interval_and_survives_a_failed_round():
    import threading

    from ops.services import repeat

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


def test_up_refuses_a_port_taken_by_someone_else(real_server, tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "STATE_DIR": str(tmp_path),
            "ENV_FILE": str(tmp_path / "none"),
            "PATH": "/usr/bin:/bin",
        }
        out = subprocess.run(
            [sys.executable, "-m", "ops.stack", "up", "--timeout", "5"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    assert out.returncode == 2
    assert f"{port} (moto)" in out.stderr and "already in use" in out.stderr


# ---- down / reset / up on a real supervisord with cheap programs ---------------------------------------------

SLEEPER = r"""
import os, signal, sys, time
grace = float(sys.argv[1])
if len(sys.argv) > 2 and sys.argv[2] == "escape" and os.fork() == 0:
    # a grandchild in a session of its own: outside supervisord's process group, deaf to SIGTERM
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)

def on_term(signum, frame):
    time.sleep(grace)  # a slow graceful shutdown, like gunicorn's
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
while True:
    time.sleep(1)
"""


def _settings(tmp_path):
    # a short folder name: supervisord's unix socket path must stay under 108 bytes
    return Settings(state_dir=tmp_path / "st", _env_file=None)


def _sleeper(tmp_path, *args: str, name: str = "sleeper"):
    from ops.stack import Program

    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    return Program(name, [sys.executable, str(script), *args], None, None, startsecs=1)


def _wait_for(fn, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def _program_pids(s, name: str) -> list[int]:
    from ops.stack import stack_processes

    out = []
    for p in stack_processes(s):
        try:
            if p.environ().get("SUPERVISOR_PROCESS_NAME") == name:
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def cleanup():
    """Kills whatever a test left behind (only processes it names), even when it fails."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_down_waits_until_every_process_has_exited(tmp_path, capsys, cleanup):
    from ops.stack import down, stack_processes, up

    s = _settings(tmp_path)
    assert up(s, 30, progs=[_sleeper(tmp_path, "3")]) == 0
    pids = _wait_for(lambda: [p.pid for p in stack_processes(s)])
    cleanup += pids
    assert len(pids) == 2  # supervisord + the sleeper, both found by the stack's marker
    capsys.readouterr()
    assert down(s, timeout=30) == 0
    out = capsys.readouterr().out
    # the sleeper takes 3 s to stop after SIGTERM: `stack stopped` comes only after it (and supervisord) exited
    assert [pid for pid in pids if not _gone(pid)] == []
    assert out.strip().endswith("stack stopped")
    assert "SIGKILL" not in out and "SIGTERM" not in out  # supervisord stopped it; nothing had to be killed


def test_down_kills_what_ignores_sigterm_and_names_it(tmp_path, capsys, cleanup):
    from ops.stack import down, stack_processes, up

    s = _settings(tmp_path)
    assert up(s, 30, progs=[_sleeper(tmp_path, "0", "escape")]) == 0
    pids = _wait_for(lambda: [p.pid for p in stack_processes(s)] if len(stack_processes(s)) == 3 else None)
    cleanup += pids
    escaped = [
        pid for pid in pids if os.getsid(pid) == pid and "supervisord" not in " ".join(psutil.Process(pid).cmdline())
    ]
    assert len(escaped) == 1
    capsys.readouterr()
    assert down(s, timeout=3) == 0
    out = capsys.readouterr().out
    assert all(_gone(pid) for pid in pids)
    assert f"sending SIGKILL: pid {escaped[0]} sleeper:" in out
    assert out.strip().endswith("stack stopped")


def test_reset_never_deletes_the_state_under_a_live_process(tmp_path, capsys, cleanup):
    from ops.stack import reset, stack_processes, up

    s = _settings(tmp_path)
    assert up(s, 30, progs=[_sleeper(tmp_path, "0", "escape")]) == 0
    pids = _wait_for(lambda: [p.pid for p in stack_processes(s)] if len(stack_processes(s)) == 3 else None)
    cleanup += pids
    capsys.readouterr()
    assert reset(s, timeout=2, kill=False) == 1  # the escaped grandchild ignores SIGTERM: refused
    err = capsys.readouterr().err
    assert "not deleting" in err and "still running" in err
    assert (s.state_dir / "supervisord.conf").exists()
    # supervisord and the sleeper exit (on a busy machine maybe just after the refusal); the grandchild stays
    survivor = _wait_for(lambda: [p.pid for p in stack_processes(s)] if len(stack_processes(s)) == 1 else None)
    assert survivor[0] in pids
    assert reset(s, timeout=2) == 0  # with SIGKILL allowed
    assert not s.state_dir.exists() and _gone(survivor[0])


def test_up_stops_its_own_leftovers_instead_of_refusing_their_port(tmp_path, capsys, cleanup):
    from ops.localservers import free_port
    from ops.stack import Program, down, stack_processes, up

    s = _settings(tmp_path)
    port = free_port()
    web = Program(
        "web",
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        port,
        f"http://127.0.0.1:{port}/",
        startsecs=1,
    )
    assert up(s, 30, progs=[web]) == 0
    first = _wait_for(lambda: _program_pids(s, "web"))
    cleanup += first
    # supervisord dies without stopping its program: the server keeps the port, as after an interrupted `down`
    sup = int((s.state_dir / "supervisord.pid").read_text())
    cleanup.append(sup)
    os.kill(sup, signal.SIGKILL)
    _wait_for(lambda: _gone(sup))
    assert [p.pid for p in stack_processes(s)] == first
    capsys.readouterr()
    assert up(s, 30, progs=[web]) == 0
    out = capsys.readouterr()
    assert "leftover processes of this stack" in out.out and f"pid {first[0]} web:" in out.out
    assert "already in use" not in out.err
    assert _gone(first[0])
    second = _wait_for(lambda: _program_pids(s, "web"))
    cleanup += second
    assert second != first
    assert down(s, timeout=20) == 0


# ---- telemetry off in every process the project starts ------------------------------------------------------


def test_stack_programs_run_with_telemetry_off_and_the_stack_marker(tmp_path):
    from ops.stack import render_config

    s = _settings(tmp_path)
    conf = render_config(s)
    env_lines = [ln for ln in conf.splitlines() if ln.startswith("environment=")]
    assert len(env_lines) >= 4  # moto, mlflow, prefect-server, prefect-worker at least
    for ln in env_lines:
        assert 'MLFLOW_DISABLE_TELEMETRY="true"' in ln and 'DO_NOT_TRACK="true"' in ln
        assert 'PREFECT_SERVER_ANALYTICS_ENABLED="false"' in ln
        assert f'CHURNOPS_STACK_DIR="{s.state_dir.resolve()}"' in ln


def test_local_servers_children_run_with_telemetry_off(real_server, tmp_path, monkeypatch):
    from ops.localservers import Server

    for name in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED"):
        monkeypatch.delenv(name, raising=False)  # not inherited from this process: set by Server itself
    srv = Server(
        [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
        tmp_path / "env.log",
        env={"DO_NOT_TRACK": "false"},
    )
    srv.proc.wait(30)
    srv.stop()
    env = json.loads((tmp_path / "env.log").read_text())
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["DO_NOT_TRACK"] == "true"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_entry_points_turn_telemetry_off_before_importing_mlflow(tmp_path):
    code = (
        "import os, sys; sys.argv = ['churnops-stack', 'config']\n"
        "from ops import entry\n"
        "try:\n    entry.stack()\nexcept SystemExit:\n    pass\n"
        "print('TELEMETRY', os.environ['MLFLOW_DISABLE_TELEMETRY'], os.environ['DO_NOT_TRACK'],"
        " os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'])"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED")
    }
    env |= {"STATE_DIR": str(tmp_path / "st"), "ENV_FILE": str(tmp_path / "none")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert "TELEMETRY true true false" in out.stdout, out.stderr


def test_repin_after_down_up_reaches_the_servers_under_the_real_supervisor(real_server, tmp_path, monkeypatch):
    """Pin A, up, down/up, pin B (the file), start: the program sees B, not the copy of A.

    `export_env` copies `.env.local` (RUN_ID=A) into the stack process before supervisord starts;
    the supervised programs must still read the pin from the file when they (re)start.
    """
    import os
    import time

    from churnops.registry import write_env_value
    from churnops.settings import export_env, get_settings
    from ops import stack

    env_path, seen = tmp_path / ".env.test", tmp_path / "seen.txt"
    env_path.write_text("RUN_ID=run-a\n")
    for k in ("RUN_ID", "MODEL_URI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ENV_FILE", str(env_path))
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "st"))
    probe = (
        "import time; from churnops.settings import get_settings; "
        f"open({str(seen)!r}, 'w').write(str(get_settings().run_id)); time.sleep(120)"
    )
    monkeypatch.setattr(
        stack, "programs", lambda s: [stack.Program("probe", [sys.executable, "-c", probe], None, None, startsecs=1)]
    )

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


def test_pin_problem_names_a_run_that_no_longer_exists(stack_env):
    from churnops.registry import client, pin_problem

    gone = stack_env.model_copy(update={"run_id": "0" * 32, "model_uri": None})
    msg = pin_problem(gone)
    assert msg is not None and "0" * 32 in msg and "does not exist" in msg and "make pin" in msg
    exp = client(stack_env).get_experiment_by_name("Default")
    run = client(stack_env).create_run(exp.experiment_id if exp else "0")
    assert pin_problem(stack_env.model_copy(update={"run_id": run.info.run_id, "model_uri": None})) is None
