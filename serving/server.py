"""The prediction API's server: granian running the Flask app as WSGI, API_WORKERS worker processes.

    python -m serving.server            # or `churnops-api`; bind API_HOST:API_PORT (API_BIND overrides)

Chosen by measurement against gunicorn's `gthread` and the project's former keep-alive gunicorn
worker (bench/bench_servers.py, `bench/results/servers.json`). The main process empties the
Prometheus multiprocess folder (PROMETHEUS_MULTIPROC_DIR, default <state_dir>/prometheus) and
forgets reloads of a previous run before the workers start; a worker that dies is respawned.
What gunicorn's `child_exit` hook did for a dead worker happens in the workers (serving/edge.py,
serving/prediction_log.py): its prediction journal is turned into a spool file and replayed, its
gauges are marked dead. Each worker builds the app and waits for its model
(`serving.wsgi`) before it takes connections, so a replacement worker takes no traffic while it loads.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from churnops.settings import Settings, get_settings, quiet_process

APP = "serving.wsgi:app"


def bind_address(s: Settings) -> tuple[str, int]:
    """(host, port): API_BIND=host:port when set (behind the nginx proxy), else API_HOST / API_PORT."""
    bind = os.environ.get("API_BIND") or os.environ.get("GUNICORN_BIND")  # GUNICORN_BIND: the name before
    if bind:
        host, _, port = bind.rpartition(":")
        return host or "127.0.0.1", int(port)
    return s.api_host, int(s.api_port)


def prometheus_dir(s: Settings) -> Path:
    """The multiprocess metrics folder (set in the environment, so every worker inherits it)."""
    return Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(s.state_dir / "prometheus")))


def prepare(s: Settings) -> None:
    """Before the workers start: an empty metrics folder, no reloads left over from a previous run."""
    prom = prometheus_dir(s)
    shutil.rmtree(prom, ignore_errors=True)
    prom.mkdir(parents=True, exist_ok=True)
    from serving.oip_models import clear_served_state

    clear_served_state(s)  # the default line's reloads and each OIP_MODELS line's


def build_server(s: Settings, target: str = APP, workers: int | None = None):
    """A granian server for `target` (a WSGI app), not started."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    host, port = bind_address(s)
    level = os.environ.get("LOG_LEVEL", "info").lower()
    return Granian(
        target,
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=int(workers or s.api_workers),
        backlog=2048,
        # headers must arrive within API_READ_TIMEOUT_S; a body read blocks one of the worker's
        # threads (backpressure: up to 512 requests at once per worker), never the worker
        http1_settings=HTTP1Settings(header_read_timeout=max(1000, int(s.api_read_timeout_s * 1000))),
        respawn_failed_workers=True,  # a killed worker is replaced (gunicorn's arbiter did this)
        respawn_interval=0.0,
        workers_kill_timeout=30,  # graceful stop, then SIGKILL (supervisor waits 35 s)
        log_level=LogLevels(level) if level in LogLevels.__members__ else LogLevels.info,
        log_access=bool(os.environ.get("API_ACCESSLOG")),
    )


def main(argv: list[str] | None = None) -> int:
    quiet_process()  # MLflow telemetry / Prefect analytics off here and in every worker
    s = get_settings()
    prometheus_dir(s)
    server = build_server(s, argv[0] if argv else APP)
    server.on_startup(lambda: prepare(s))
    host, port = bind_address(s)
    print(f"prediction API on http://{host}:{port}/ (granian, {s.api_workers} workers)", flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
