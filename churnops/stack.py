"""The embedded (no-Docker) stack under supervisord: `make up`, `make down`, `make status`.

Renders `.stack/supervisord.conf` from settings, starts supervisord (a real process
supervisor: restarts, logs, one control socket), and waits for each service's health URL.
`up` twice is harmless (it re-reads the config and starts what is stopped); a port already
taken by something that is not ours fails with a message naming the port and the service.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urlparse

from churnops.settings import PROJECT_ROOT, Settings, get_settings

BIN = Path(sys.executable).parent


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
    group: str = "core"


def _port(url: str) -> int:
    return urlparse(url).port or 80


def programs(s: Settings) -> list[Program]:
    """What the embedded stack runs; ports come from the settings' URLs."""
    state = s.state_dir.resolve()
    moto_port = _port(s.aws_endpoint_url or "http://127.0.0.1:4566")
    mlflow_port = _port(s.mlflow_tracking_uri)
    prefect_port = _port(s.prefect_api_url)
    prefect_env = {
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_API_URL": s.prefect_api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    progs = [
        Program("moto", [str(BIN / "python"), "-m", "churnops.motoserver", "-H", "127.0.0.1", "-p", str(moto_port)],
                moto_port,
                f"http://127.0.0.1:{moto_port}/moto-api/"),
        Program("mlflow", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                           "--workers", "1", "--backend-store-uri", f"sqlite:///{state}/mlflow/mlflow.db",
                           "--artifacts-destination", str(state / "mlflow" / "artifacts"), "--serve-artifacts"],
                mlflow_port, f"http://127.0.0.1:{mlflow_port}/health"),
        Program("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                   "--port", str(prefect_port)],
                prefect_port, f"http://127.0.0.1:{prefect_port}/api/health", env=prefect_env),
        Program("prefect-worker", [str(BIN / "prefect"), "worker", "start", "--pool", s.work_pool, "--type", "process"],
                None, None, env=prefect_env, startsecs=5),
    ]
    if find_spec("reporting.webserver") is not None:
        progs.append(Program("reports", [str(BIN / "python"), "-m", "reporting.webserver"], s.reports_port,
                             f"http://127.0.0.1:{s.reports_port}/", group="monitor"))
    if find_spec("serving.gunicorn_conf") is not None:
        proxy = _api_proxy(s)
        if proxy is not None:  # nginx on the public port, gunicorn behind it on a loopback port
            internal = s.api_internal_port
            progs.append(Program("api", [str(BIN / "gunicorn"), "-c", "python:serving.gunicorn_conf", "serving.wsgi:app"],
                                 internal, f"http://127.0.0.1:{internal}/health", autostart=False, group="serve",
                                 env={"GUNICORN_BIND": proxy}))
            progs.append(Program(API_PROXY, [str(BIN / "python"), "-m", "serving.proxy"], s.api_port,
                                 f"http://127.0.0.1:{s.api_port}/health", autostart=False, group="serve"))
        else:
            progs.append(Program("api", [str(BIN / "gunicorn"), "-c", "python:serving.gunicorn_conf", "serving.wsgi:app"],
                                 s.api_port, f"http://127.0.0.1:{s.api_port}/health", autostart=False, group="serve"))
    if find_spec("serving.consumer") is not None:
        progs.append(Program("consumer", [str(BIN / "python"), "-m", "serving.consumer"], None, None,
                             autostart=False, group="serve"))
    return progs


API_PROXY = "api-proxy"


def _api_proxy(s: Settings) -> str | None:
    """gunicorn's bind address behind nginx when the API gets the proxy (nginx installed), else None."""
    if find_spec("serving.proxy") is None:
        return None
    from serving.proxy import proxy_enabled, upstream_bind

    return upstream_bind(s) if proxy_enabled(s) else None


def with_proxy(s: Settings, names: list[str], stopping: bool = False) -> list[str]:
    """`api` means the API and its nginx proxy (when the stack runs one): started after it, stopped before."""
    if "api" not in names or API_PROXY in names or not any(p.name == API_PROXY for p in programs(s)):
        return names
    return [API_PROXY, *names] if stopping else [*names, API_PROXY]


def paths(s: Settings) -> dict[str, Path]:
    state = s.state_dir.resolve()
    return {"state": state, "conf": state / "supervisord.conf", "sock": state / "supervisor.sock",
            "pid": state / "supervisord.pid", "logs": state / "logs"}


def render_config(s: Settings) -> str:
    p = paths(s)
    lines = [
        "; generated by `churnops-stack` from settings; edits are overwritten",
        "[unix_http_server]", f"file={p['sock']}", "",
        "[supervisord]", f"logfile={p['logs'] / 'supervisord.log'}", f"pidfile={p['pid']}",
        f"directory={PROJECT_ROOT}", "nodaemon=false", "logfile_maxbytes=10MB", "", 
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
        "[supervisorctl]", f"serverurl=unix://{p['sock']}", "",
    ]
    base_env = {"PYTHONUNBUFFERED": "1", "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    for prog in programs(s):
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
            "stopasgroup=true", "killasgroup=true", "stopwaitsecs=20",
            "redirect_stderr=true",
            f"stdout_logfile={p['logs'] / (prog.name + '.log')}",
            "stdout_logfile_maxbytes=20MB", "stdout_logfile_backups=2",
            f"environment={env_line}", "",
        ]
    return "\n".join(lines)


def _ctl(s: Settings, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "supervisorctl"), "-c", str(paths(s)["conf"]), *args],
                          capture_output=True, text=True, check=check)


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


def up(s: Settings, timeout: float = 180) -> int:
    p = paths(s)
    for d in (p["state"], p["logs"], p["state"] / "mlflow", p["state"] / "prefect"):
        d.mkdir(parents=True, exist_ok=True)
    progs = programs(s)
    running = supervisor_running(s)
    if not running:
        busy = [f"{prog.port} ({prog.name})" for prog in progs if prog.autostart and prog.port and port_in_use(prog.port)]
        if busy:
            print("ERROR: port(s) already in use by a process this stack did not start: " + ", ".join(busy)
                  + ". Stop that process, or run `make down` if it is an older stack.", file=sys.stderr)
            return 2
    p["conf"].write_text(render_config(s))
    if running:
        _ctl(s, "reread")
        _ctl(s, "update")
        for prog in progs:
            if prog.autostart:
                _ctl(s, "start", prog.name)
        print(f"stack already running (supervisord pid {_ctl(s, 'pid').stdout.strip()}): config re-read")
    else:
        out = subprocess.run([str(BIN / "supervisord"), "-c", str(p["conf"])], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"ERROR: supervisord failed to start: {out.stderr.strip() or out.stdout.strip()}", file=sys.stderr)
            return 1
    bad = wait_healthy([x for x in progs if x.autostart], timeout)
    if bad:
        print(f"ERROR: not healthy after {timeout:.0f} s: {', '.join(bad)}; logs in {p['logs']}", file=sys.stderr)
        return 1
    print_status(s)
    return 0


def down(s: Settings, timeout: float = 60) -> int:
    if not supervisor_running(s):
        print("stack not running")
        return 0
    _ctl(s, "shutdown")
    deadline = time.monotonic() + timeout
    while supervisor_running(s) and time.monotonic() < deadline:
        time.sleep(0.3)
    print("stack stopped")
    return 0


def start(s: Settings, names: list[str], timeout: float = 120) -> int:
    """Start named programs (e.g. the serving group) and wait for their health."""
    if not supervisor_running(s):
        print("ERROR: stack not running: run `make up` first", file=sys.stderr)
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
        print(f"ERROR: not healthy after {timeout:.0f} s: {', '.join(bad)}; logs in {paths(s)['logs']}", file=sys.stderr)
        return 1
    return 0


def stop(s: Settings, names: list[str]) -> int:
    if supervisor_running(s):
        for n in with_proxy(s, names, stopping=True):
            print(_ctl(s, "stop", n).stdout.strip())
    return 0


def print_status(s: Settings) -> int:
    if not supervisor_running(s):
        print("stack not running (make up)")
        return 3
    print(_ctl(s, "status").stdout.rstrip())
    for prog in programs(s):
        if prog.health:
            state = "healthy" if healthy(prog.health) else "DOWN"
            print(f"  {prog.name:15s} {prog.health:45s} {state}")
    return 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="embedded stack under supervisord")
    ap.add_argument("action", choices=["up", "down", "status", "start", "stop", "config"])
    ap.add_argument("names", nargs="*", help="programs for start/stop")
    ap.add_argument("--timeout", type=float, default=180)
    a = ap.parse_args(argv)
    s = get_settings()
    if a.action == "up":
        sys.exit(up(s, a.timeout))
    if a.action == "down":
        sys.exit(down(s))
    if a.action == "status":
        sys.exit(print_status(s))
    if a.action == "start":
        sys.exit(start(s, a.names, a.timeout))
    if a.action == "stop":
        sys.exit(stop(s, a.names))
    print(render_config(s))


if __name__ == "__main__":
    main()
