"""gunicorn configuration of the prediction API: the alternative to the API's server (granian,
serving/server.py), kept for comparison (bench/bench_servers.py runs gunicorn's `gthread` with it).

    gunicorn -c python:serving.gunicorn_conf serving.wsgi:app

Bind address and worker count come from settings (API_HOST, API_PORT, API_WORKERS). The
Prometheus multiprocess folder (PROMETHEUS_MULTIPROC_DIR, default <state_dir>/prometheus) is
emptied when the master starts; `child_exit` marks a dead worker's gauges and turns its
prediction journal into a spool file (replayed by the other workers); `worker_exit` flushes
that worker's prediction log.

Workers are gunicorn's `gthread` (GUNICORN_THREADS threads each, default 4); GUNICORN_WORKER_CLASS
picks another (`sync`: a connection is then closed at once when its request was read to the end,
see `fast_close` below).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
from pathlib import Path

from churnops.cli import setup_logging
from churnops.contract import load_any_contract
from churnops.model_line import for_dataset, line_dir
from churnops.settings import get_settings, quiet_process
from serving.prediction_log import close_open_logs, reclaim_orphans

quiet_process()  # MLflow telemetry / Prefect analytics off in the master and (inherited) every worker
_s = for_dataset(get_settings())  # the data set's line: its spool; another line's server keeps its own files
_home = line_dir(load_any_contract(_s.dataset), _s) or _s.state_dir
_home.mkdir(parents=True, exist_ok=True)
_prom = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_home / "prometheus")))

bind = os.environ.get("GUNICORN_BIND", f"{_s.api_host}:{_s.api_port}")
workers = int(os.environ.get("GUNICORN_WORKERS", _s.api_workers))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 60
graceful_timeout = 30
keepalive = 5
backlog = 2048
preload_app = False  # each worker loads its own model and opens its own store connection
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
proc_name = "churn-api"

# gunicorn's control socket (`gunicornc`) defaults to one path per user ($XDG_RUNTIME_DIR or
# ~/.gunicorn/gunicorn.ctl), shared by every gunicorn on the host: each instance would take over
# (or remove) the others'. Ours lives in the state folder; a path too long for a Unix socket
# (108 bytes) turns it off rather than falling back to the shared one.
control_socket = str(_home.resolve() / "gunicorn.ctl")
control_socket_disable = len(control_socket.encode()) > 100


def on_starting(server):
    shutil.rmtree(_prom, ignore_errors=True)
    _prom.mkdir(parents=True, exist_ok=True)
    from serving.oip_models import clear_served_state

    clear_served_state(_s)  # the default line's reloads and each OIP_MODELS line's


def post_fork(server, worker):
    setup_logging()
    if type(worker).__name__ == "SyncWorker":  # one connection at a time: the module flag below is safe
        install_fast_close()


# ---- closing connections (sync workers) ----------------------------------------------------------
# gunicorn >= 26 ends every sync-worker request with `util.close_graceful`: it sends FIN, then
# blocks (up to 2 s) until the client closes its side, so that unread request bytes can never
# turn into an RST that truncates the response (RFC 9112, 9.6). When the request body was read to
# the end and nothing else waits in the socket there is nothing to protect, and waiting for the
# client's FIN costs a round trip through the client on every request: with the load generator
# on the same 2 cores it cut throughput by a quarter and set the p99 (bench/bench_serve.py). Such
# connections are closed at once; every other one (a 413 with its body unread, a chunked upload,
# pipelined bytes) still gets gunicorn's lingering close.
_request_read = False  # sync workers serve one connection at a time


def pre_request(worker, req):
    global _request_read
    _request_read = False


def post_request(worker, req, environ, resp):
    global _request_read
    reader = getattr(getattr(req, "body", None), "reader", None)
    _request_read = type(reader).__name__ == "LengthReader" and getattr(reader, "length", None) == 0


def fast_close(sock, *args, **kwargs):
    """Close now when the request was read to the end and the client sent nothing more."""
    global _request_read
    read, _request_read = _request_read, False  # one use: a connection that failed parsing never sets it
    if read and not isinstance(sock, ssl.SSLSocket):
        try:
            pending = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            pending = b""
        except Exception:
            pending = None
        if pending == b"":
            try:
                sock.close()
            except OSError:
                pass
            return
    return _lingering_close(sock, *args, **kwargs)


_lingering_close = None


def install_fast_close() -> None:
    global _lingering_close
    from gunicorn import util

    if _lingering_close is None and hasattr(util, "close_graceful"):
        _lingering_close = util.close_graceful
        util.close_graceful = fast_close


def worker_exit(server, worker):
    close_open_logs()  # the app's log and each /v2 model's


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(_prom))
    # a worker that died without flushing (SIGKILL, OOM) left its journal: make it a spool file
    # now (the other workers replay it); its flock went with the process

    try:
        reclaim_orphans(_s.state_path(_s.spool_dir, "spool"))
    except Exception:
        server.log.exception("reclaiming the prediction journal of worker %s failed", worker.pid)
