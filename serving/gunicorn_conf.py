"""gunicorn configuration of the prediction API.

    gunicorn -c python:serving.gunicorn_conf "serving.app:create_app()"

Bind address and worker count come from settings (API_HOST, API_PORT, API_WORKERS). The
Prometheus multiprocess folder (PROMETHEUS_MULTIPROC_DIR, default <state_dir>/prometheus) is
emptied when the master starts; `child_exit` marks a dead worker's gauges; `worker_exit`
flushes that worker's prediction log.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from churnops.settings import get_settings

_s = get_settings()
_prom = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_s.state_dir / "prometheus")))

bind = os.environ.get("GUNICORN_BIND", f"{_s.api_host}:{_s.api_port}")
workers = int(os.environ.get("GUNICORN_WORKERS", _s.api_workers))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = 60
graceful_timeout = 30
keepalive = 5
backlog = 2048
preload_app = False  # each worker loads its own model and opens its own store connection
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
proc_name = "churn-api"


def on_starting(server):
    shutil.rmtree(_prom, ignore_errors=True)
    _prom.mkdir(parents=True, exist_ok=True)
    from serving.model import clear_shared_state

    clear_shared_state(_s)


def post_fork(server, worker):
    from churnops.cli import setup_logging

    setup_logging()


def worker_exit(server, worker):
    from serving.app import close_all_logs

    close_all_logs()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(_prom))
