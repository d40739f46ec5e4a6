"""The embedded (no-Docker) stack under supervisord: `make up`, `make down`, `make status`.

Renders `.stack/supervisord.conf` from settings, starts supervisord (a real process
supervisor: restarts, logs, one control socket), and waits for each service's health URL.
`up` twice is harmless (it re-reads the config and starts what is stopped); a port already
taken by something that is not ours fails with a message naming the port and the service.

Every process of the stack carries `CHURNOPS_STACK_DIR=<state folder>` in its environment
(supervisord, its programs, and what they start: API server workers, MLflow's server workers,
Prefect's flow runs). That marker is how `down` knows it is done (it waits, bounded, until no
process carries it, then sends SIGTERM and SIGKILL to the survivors and names them), how
`reset` knows it may delete the state folder, and how `up` recognises the leftovers of an
earlier run of this stack and stops them instead of refusing their ports.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from churnops.admin import AdminTokenError, admin_token, token_path
from churnops.registry import pin_problem
from churnops.settings import PROJECT_ROOT, QUIET_ENV, Settings, child_env, get_settings
from ops import services
from serving.proxy import proxy_enabled, upstream_bind

BIN = Path(sys.executable).parent
MARKER = "CHURNOPS_STACK_DIR"  # environment variable naming the state folder of the stack a process belongs to


@dataclass
class Program:
    name: str
    command: list[str]
    port: int | None
    health: str | None
    autostart: bool = True
    env: dict[str, str] = field(default_factory=dict)
    startsecs: int = 3
    stopsignal: str = "TERM"
    stopwaitsecs: int = 20  # supervisord sends SIGKILL (to the process group) after this
    group: str = "core"


def programs(s: Settings) -> list[Program]:
    """What the embedded stack runs: the project's console scripts (the Docker image runs the same ones,
    see ops.services); ports come from the settings' URLs."""
    moto_port = services.port_of(s.aws_endpoint_url or "http://127.0.0.1:4566")
    mlflow_port = services.port_of(s.mlflow_tracking_uri)
    prefect_port = services.port_of(s.prefect_api_url)
    prefect_env = services.prefect_env(s)
    progs = [
        Program(
            "moto",
            services.moto_server_argv("127.0.0.1", moto_port),
            moto_port,
            f"http://127.0.0.1:{moto_port}/moto-api/",
        ),
        Program("mlflow", [str(BIN / "churnops-mlflow")], mlflow_port, f"http://127.0.0.1:{mlflow_port}/health"),
        Program(
            "prefect-server",
            [str(BIN / "churnops-prefect-server")],
            prefect_port,
            f"http://127.0.0.1:{prefect_port}/api/health",
            env=prefect_env,
        ),
        Program("prefect-worker", [str(BIN / "churnops-prefect-worker")], None, None, env=prefect_env, startsecs=5),
    ]
    progs.append(
        Program(
            "reports",
            [str(BIN / "churnops-reports")],
            s.reports_port,
            f"http://127.0.0.1:{s.reports_port}/",
            group="monitor",
        )
    )
    prometheus = shutil.which("prometheus")
    if prometheus:  # `make system-deps` installs the Debian package; optional
        progs.append(
            Program(
                "prometheus",
                services.prometheus_argv(s, prometheus),
                s.prometheus_port,
                f"http://127.0.0.1:{s.prometheus_port}/-/ready",
                group="monitor",
                startsecs=2,
            )
        )
    alertmanager = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if alertmanager:  # optional like Prometheus; it and the receiver being down never block monitoring
        progs.append(
            Program(
                "alertmanager",
                services.alertmanager_argv(s, alertmanager),
                s.alertmanager_port,
                f"http://127.0.0.1:{s.alertmanager_port}/-/ready",
                group="monitor",
                startsecs=2,
            )
        )
        progs.append(
            Program(
                "alert-receiver",
                [str(BIN / "python"), "-m", "reporting.alert_receiver"],
                s.alert_receiver_port,
                f"http://127.0.0.1:{s.alert_receiver_port}/health",
                group="monitor",
            )
        )
    proxy = _api_proxy(s)
    if proxy is not None:  # nginx on the public port, the API server behind it on a loopback port
        internal = s.api_internal_port
        progs.append(
            Program(
                "api",
                [str(BIN / "churnops-api")],
                internal,
                f"http://127.0.0.1:{internal}/health",
                autostart=False,
                group="serve",
                env={"API_BIND": proxy, **serving_pin_env(s)},
                stopwaitsecs=35,
            )
        )  # the server's graceful stop takes up to 30 s
        progs.append(
            Program(
                API_PROXY,
                [str(BIN / "churnops-api-proxy")],
                s.api_port,
                f"http://127.0.0.1:{s.api_port}/health",
                autostart=False,
                group="serve",
            )
        )
    else:
        progs.append(
            Program(
                "api",
                [str(BIN / "churnops-api")],
                s.api_port,
                f"http://127.0.0.1:{s.api_port}/health",
                autostart=False,
                group="serve",
                env=serving_pin_env(s),
                stopwaitsecs=35,
            )
        )  # the server's graceful stop takes up to 30 s
    progs.append(
        Program(
            "consumer",
            [str(BIN / "churnops-consumer")],
            None,
            None,
            autostart=False,
            group="serve",
            env=serving_pin_env(s),
        )
    )
    return progs


def serving_pin_env(s: Settings) -> dict[str, str]:
    """The data set and model the servers serve, as `start-serve` was called with them (`make demo-image`
    serves `DATASET=raw_digits MODEL_URI=models:/raw-digits-cnn@champion` without editing `.env.local`)."""
    env = {"DATASET": s.dataset}
    if s.model_uri:
        env["MODEL_URI"] = s.model_uri
    return env


API_PROXY = "api-proxy"


def _api_proxy(s: Settings) -> str | None:
    """The API server's bind address behind nginx when the API gets the proxy (nginx installed), else None."""
    return upstream_bind(s) if proxy_enabled(s) else None


def with_proxy(s: Settings, names: list[str], stopping: bool = False) -> list[str]:
    """`api` means the API and its nginx proxy (when the stack runs one): started after it, stopped before."""
    if "api" not in names or API_PROXY in names or not any(p.name == API_PROXY for p in programs(s)):
        return names
    return [API_PROXY, *names] if stopping else [*names, API_PROXY]


def program_env(s: Settings) -> dict[str, str]:
    """Environment every program gets: the settings that shape the services' command lines, so each
    console script rebuilds the same argv as `ops.services` does here."""
    env = {
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "STATE_DIR": str(s.state_dir.resolve()),
        "MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
        "PREFECT_API_URL": s.prefect_api_url,
        "WORK_POOL": s.work_pool,
    }
    if s.aws_endpoint_url:
        env["AWS_ENDPOINT_URL"] = s.aws_endpoint_url
    return env


def paths(s: Settings) -> dict[str, Path]:
    state = s.state_dir.resolve()
    return {
        "state": state,
        "conf": state / "supervisord.conf",
        "sock": state / "supervisor.sock",
        "pid": state / "supervisord.pid",
        "logs": state / "logs",
    }


def stack_env(s: Settings) -> dict[str, str]:
    """What every process of the stack gets in its environment: telemetry off, the stack marker."""
    return {**QUIET_ENV, MARKER: str(s.state_dir.resolve())}


def render_config(s: Settings, progs: list[Program] | None = None) -> str:
    """supervisord.conf for `progs` (default: `programs(s)`)."""
    p = paths(s)
    lines = [
        "; generated by `churnops-stack` from settings; edits are overwritten",
        "[unix_http_server]",
        f"file={p['sock']}",
        "",
        "[supervisord]",
        f"logfile={p['logs'] / 'supervisord.log'}",
        f"pidfile={p['pid']}",
        f"directory={PROJECT_ROOT}",
        "nodaemon=false",
        "logfile_maxbytes=10MB",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{p['sock']}",
        "",
    ]
    base_env = {**program_env(s), **stack_env(s)}
    for prog in programs(s) if progs is None else progs:
        env = {**base_env, **prog.env}
        env_line = ",".join(f'{k}="{v}"' for k, v in env.items())
        lines += [
            f"[program:{prog.name}]",
            f"command={shlex.join(prog.command)}",
            f"directory={PROJECT_ROOT}",
            f"autostart={'true' if prog.autostart else 'false'}",
            "autorestart=true",
            f"startsecs={prog.startsecs}",
            "startretries=20",
            f"stopsignal={prog.stopsignal}",
            "stopasgroup=true",
            "killasgroup=true",
            f"stopwaitsecs={prog.stopwaitsecs}",
            "redirect_stderr=true",
            f"stdout_logfile={p['logs'] / (prog.name + '.log')}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
            f"environment={env_line}",
            "",
        ]
    return "\n".join(lines)


def _ctl(s: Settings, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "supervisorctl"), "-c", str(paths(s)["conf"]), *args], capture_output=True, text=True, check=check
    )


def supervisor_running(s: Settings) -> bool:
    if not paths(s)["sock"].exists():
        return False
    return _ctl(s, "pid").stdout.strip().isdigit()


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback)
            return r.status < 500
    except OSError:
        return False


def wait_healthy(progs: list[Program], timeout: float) -> list[str]:
    """Wait until every program's health URL answers; returns the names still unhealthy."""
    deadline = time.monotonic() + timeout
    pending = [p for p in progs if p.health]
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if not healthy(p.health)]
        if pending:
            time.sleep(0.5)
    return [p.name for p in pending]


# ---- the stack's processes -------------------------------------------------------------------------


def stack_processes(s: Settings) -> list:
    """Every live process of this stack (psutil.Process): supervisord and whatever carries its marker.

    supervisord is found by its pid file too (when its command line names this stack's config: a
    stack started before the marker existed), with all its descendants; other processes by
    `CHURNOPS_STACK_DIR` in their environment, orphans included (nginx, which writes its title over
    its environment, by its `-p` prefix in the state folder). The calling process and its ancestors
    are never part of the answer.
    """
    state = str(s.state_dir.resolve())
    mine = {os.getpid()} | {a.pid for a in psutil.Process().parents()}
    found: dict[int, psutil.Process] = {}
    try:
        sup = psutil.Process(int(paths(s)["pid"].read_text().strip()))
        cmd = sup.cmdline()
        if any("supervisord" in part for part in cmd) and str(paths(s)["conf"]) in cmd:  # not a reused pid
            found[sup.pid] = sup
            found.update({c.pid: c for c in sup.children(recursive=True)})
    except (OSError, ValueError, psutil.Error):
        pass
    for proc in psutil.process_iter():
        if proc.pid in mine or proc.pid in found:
            continue
        try:
            if proc.environ().get(MARKER) == state:
                found[proc.pid] = proc
            # nginx writes its process title over its environment: known by its prefix in the state folder
            elif proc.name().startswith("nginx") and any(state + "/" in part for part in proc.cmdline()):
                found[proc.pid] = proc
        except (psutil.Error, OSError):
            continue
    for proc in list(found.values()):  # e.g. nginx workers, whose title hides both marker and prefix
        try:
            found.update({c.pid: c for c in proc.children(recursive=True) if c.pid not in mine})
        except psutil.Error:
            pass
    alive = []
    for pid, proc in sorted(found.items()):
        try:
            if pid not in mine and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            pass
    return alive


def describe(proc) -> str:
    """`pid 123 api: gunicorn: worker [churn-api]`: the supervisor program (when known) and the command line."""
    try:
        program = proc.environ().get("SUPERVISOR_PROCESS_NAME") or ""
        cmd = " ".join(proc.cmdline()) or proc.name()
    except (psutil.Error, OSError):
        program, cmd = "", "?"
    if not program:
        program = "supervisord" if "supervisord" in cmd else ""
    label = f"{program}: " if program else ""
    return f"pid {proc.pid} {label}{cmd[:100]}"


def wait_exited(s: Settings, timeout: float) -> list:
    """Wait until no process of the stack is alive, at most `timeout` s; returns the survivors."""
    deadline = time.monotonic() + timeout
    alive = stack_processes(s)
    while alive and time.monotonic() < deadline:
        time.sleep(0.3)
        alive = stack_processes(s)
    return alive


def _signal(procs: list, sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


def _is_supervisord(proc) -> bool:
    try:
        return any("supervisord" in part for part in proc.cmdline()[:2])
    except psutil.Error:
        return False


def stop_processes(s: Settings, timeout: float, kill: bool = True) -> list:
    """Stop every process of the stack and wait until all have exited; returns the survivors.

    supervisord is asked first: it stops its programs and their process groups (SIGKILL after each
    program's stopwaitsecs). Without a supervisord, or once it has exited, every process still
    alive gets SIGTERM. Whatever is alive `timeout` s after the start gets SIGKILL (unless `kill` is
    false). Each process this function had to signal itself is named on stdout.
    """
    deadline = time.monotonic() + timeout
    alive = stack_processes(s)
    if supervisor_running(s):
        _ctl(s, "shutdown")
    else:
        _signal([p for p in alive if _is_supervisord(p)], signal.SIGTERM)
    termed: set[int] = set()
    while alive and time.monotonic() < deadline:
        if not any(_is_supervisord(p) for p in alive):
            left = [p for p in alive if p.pid not in termed]
            for proc in left:
                print(f"not stopped by supervisord, sending SIGTERM: {describe(proc)}")
            _signal(left, signal.SIGTERM)
            termed.update(p.pid for p in left)
        time.sleep(0.3)
        alive = stack_processes(s)
    if not alive or not kill:
        return alive
    for proc in alive:
        print(f"still running after {timeout:.0f} s, sending SIGKILL: {describe(proc)}")
    _signal(alive, signal.SIGKILL)
    return wait_exited(s, 10)


def up(s: Settings, timeout: float = 180, progs: list[Program] | None = None) -> int:
    """Start supervisord with `progs` (default `programs(s)`), or re-read its config when it runs."""
    p = paths(s)
    for d in (p["state"], p["logs"], p["state"] / "mlflow", p["state"] / "prefect"):
        d.mkdir(parents=True, exist_ok=True)
    progs = programs(s) if progs is None else progs
    running = supervisor_running(s)
    if not running:
        leftovers = stack_processes(s)
        if leftovers:
            print("stopping leftover processes of this stack (" + str(p["state"]) + ") from an earlier run:")
            for proc in leftovers:
                print(f"  {describe(proc)}")
            survivors = stop_processes(s, min(s.stack_stop_timeout_s, 30.0))
            if survivors:
                print(
                    "ERROR: could not stop the stack's leftover processes: "
                    + "; ".join(describe(x) for x in survivors),
                    file=sys.stderr,
                )
                return 2
        busy = [
            f"{prog.port} ({prog.name})" for prog in progs if prog.autostart and prog.port and port_in_use(prog.port)
        ]
        if busy:
            print(
                "ERROR: port(s) already in use by a process this stack did not start: "
                + ", ".join(busy)
                + ". Stop that process, or run `make down` if it is an older stack.",
                file=sys.stderr,
            )
            return 2
    p["conf"].write_text(render_config(s, progs))
    if running:
        _ctl(s, "reread")
        _ctl(s, "update")
        for prog in progs:
            if prog.autostart:
                _ctl(s, "start", prog.name)
        print(f"stack already running (supervisord pid {_ctl(s, 'pid').stdout.strip()}): config re-read")
    else:
        # child_env: no RUN_ID/MODEL_URI copied in, the servers read the pin from the dotenv file
        out = subprocess.run(
            [str(BIN / "supervisord"), "-c", str(p["conf"])],
            capture_output=True,
            text=True,
            env={**child_env(), **stack_env(s)},
        )
        if out.returncode != 0:
            print(f"ERROR: supervisord failed to start: {out.stderr.strip() or out.stdout.strip()}", file=sys.stderr)
            return 1
    bad = wait_healthy([x for x in progs if x.autostart], timeout)
    if bad:
        print(f"ERROR: not healthy after {timeout:.0f} s: {', '.join(bad)}; logs in {p['logs']}", file=sys.stderr)
        return 1
    print_status(s, progs)
    return print_admin_token(s)


def print_admin_token(s: Settings) -> int:
    """Say which admin token the API accepts (generated into the state folder when ADMIN_TOKEN is unset)."""
    try:
        token = admin_token(s)
    except AdminTokenError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    where = f"kept in {token_path(s)}" if (s.admin_token or "").strip() != token else "ADMIN_TOKEN"
    print(f"admin token (POST /model/reload): {token}   ({where})")
    return 0


def down(s: Settings, timeout: float | None = None, kill: bool = True) -> int:
    """Stop the stack and wait until every one of its processes has exited (bounded; see stop_processes).

    Prints `stack stopped` only then; 1 with the survivors named when some are still alive.
    """
    timeout = s.stack_stop_timeout_s if timeout is None else timeout
    if not supervisor_running(s) and not stack_processes(s):
        print("stack not running")
        return 0
    survivors = stop_processes(s, timeout, kill=kill)
    if survivors:
        print(
            "ERROR: the stack's processes are still running: " + "; ".join(describe(x) for x in survivors),
            file=sys.stderr,
        )
        return 1
    print("stack stopped")
    return 0


def reset(s: Settings, timeout: float | None = None, kill: bool = True) -> int:
    """`make reset_all`: stop the stack, then delete its state folder, never under a live process."""
    state = s.state_dir.resolve()
    if state == Path(state.anchor) or state in PROJECT_ROOT.resolve().parents or state == PROJECT_ROOT.resolve():
        print(f"ERROR: refusing to delete {state}: STATE_DIR must be a folder of its own", file=sys.stderr)
        return 2
    down(s, timeout, kill=kill)
    survivors = stack_processes(s)
    if survivors:
        print(
            f"ERROR: not deleting {state}: processes of the stack are still running: "
            + "; ".join(describe(x) for x in survivors)
            + ". Stop them, then run `make reset_all` again.",
            file=sys.stderr,
        )
        return 1
    if state.exists():
        shutil.rmtree(state)
        print(f"deleted {state}")
    return 0


def start(s: Settings, names: list[str], timeout: float = 120) -> int:
    """Start named programs (e.g. the serving group) and wait for their health."""
    if not supervisor_running(s):
        print("ERROR: stack not running: run `make up` first", file=sys.stderr)
        return 2
    if {"api", "consumer"} & set(names):
        problem = pin_problem(s)
        if problem:
            print(f"ERROR: {problem}", file=sys.stderr)
            return 2
    paths(s)["conf"].write_text(render_config(s))
    _ctl(s, "reread")
    _ctl(s, "update")
    names = with_proxy(s, names)
    for n in names:
        _ctl(s, "stop", n)  # restart = stop + start; "not running" from stop is not an error here
        out = _ctl(s, "start", n)
        print(out.stdout.strip() or out.stderr.strip())
    bad = wait_healthy([p for p in programs(s) if p.name in names], timeout)
    if bad:
        print(
            f"ERROR: not healthy after {timeout:.0f} s: {', '.join(bad)}; logs in {paths(s)['logs']}", file=sys.stderr
        )
        return 1
    return 0


def stop(s: Settings, names: list[str]) -> int:
    if supervisor_running(s):
        for n in with_proxy(s, names, stopping=True):
            print(_ctl(s, "stop", n).stdout.strip())
    return 0


def print_status(s: Settings, progs: list[Program] | None = None) -> int:
    if not supervisor_running(s):
        leftovers = stack_processes(s)
        print("stack not running (make up)" + (": leftover processes (make down stops them): " if leftovers else ""))
        for proc in leftovers:
            print(f"  {describe(proc)}")
        return 3
    print(_ctl(s, "status").stdout.rstrip())
    for prog in programs(s) if progs is None else progs:
        if prog.health:
            state = "healthy" if healthy(prog.health) else "DOWN"
            print(f"  {prog.name:15s} {prog.health:45s} {state}")
    return 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="embedded stack under supervisord")
    ap.add_argument("action", choices=["up", "down", "reset", "status", "start", "stop", "config"])
    ap.add_argument("names", nargs="*", help="programs for start/stop")
    ap.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="up/start: seconds to wait for health (180); down/reset: seconds before SIGKILL "
        "of the survivors (STACK_STOP_TIMEOUT_S, 45)",
    )
    ap.add_argument("--no-kill", action="store_true", help="down/reset: never SIGKILL survivors, only report them")
    a = ap.parse_args(argv)
    s = get_settings()
    wait = 180.0 if a.timeout is None else a.timeout
    if a.action == "up":
        sys.exit(up(s, wait))
    if a.action == "down":
        sys.exit(down(s, a.timeout, kill=not a.no_kill))
    if a.action == "reset":
        sys.exit(reset(s, a.timeout, kill=not a.no_kill))
    if a.action == "status":
        sys.exit(print_status(s))
    if a.action == "start":
        sys.exit(start(s, a.names, wait))
    if a.action == "stop":
        sys.exit(stop(s, a.names))
    print(render_config(s))


if __name__ == "__main__":
    main()
