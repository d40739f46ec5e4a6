"""Which server runs the API (not a test): candidates side by side, same app, same model, same load.

    python bench/bench_servers.py        # writes bench/results/servers.json, prints a table

Each candidate serves the same app object (`serving.wsgi:app`) with the same local model bundle
(XGBoost fitted on ../shared/data/bank_churners.csv when present, else on the synthetic
customers), 2 workers, prediction log on (SQLite):

- `granian`: `python -m serving.server` (granian --interface wsgi --workers 2), the API's server;
- `gthread`: gunicorn's threaded worker (`-k gthread --threads 4`, the project's gunicorn config);
- `keepalive`: the project's former keep-alive gunicorn worker, taken from git
  (BENCH_KEEPALIVE_REF, default `adc6ebc`: the last commit that had serving/gunicorn_worker.py).

Load (wrk, one thread, on the same cores): POST /predict single rows at c=1/16/64 and 1,000-row
POST /predict/batch at c=2, in BENCH_ROUNDS (2) interleaved rounds, the order rotated each round.
Then the edge's fault scenarios per candidate (churnops/badclients.py: fake-end chunked body,
endless chunked upload, slow oversize upload, slow reader, 8 MB body from urllib) with /health
probed every 0.25 s (pass: every probe 200 within 2 s), and one worker SIGKILLed under c=16 load
(pass: the server answers /health and /predict after it). Last, the ceiling: a hello-world WSGI
app on the fastest candidate and on gthread, 2 workers, c=16.
The rule (issue 18): the keep-alive worker stays only if it is ahead by more than 15 % at c=16
and passes every fault scenario.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_serve import DATA, EXAMPLE, ROOT, load, real_records, wait_ready

from churnops import badclients
from ops.localservers import Server, free_port, wait_http

OUT = ROOT / "bench" / "results" / "servers.json"
SECONDS = float(os.environ.get("BENCH_HTTP_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
FAULT_S = float(os.environ.get("BENCH_FAULT_S", "6"))
KEEPALIVE_REF = os.environ.get("BENCH_KEEPALIVE_REF", "adc6ebc")
CANDIDATES = [c for c in os.environ.get("BENCH_SERVERS", "granian,gthread,keepalive").split(",") if c]
WORKERS = 2


def make_bundle(path: Path) -> Path:
    """A real bundle without MLflow: XGBoost (200 trees, depth 6) with ONNX, like a trained champion."""
    import pandas as pd
    import xgboost as xgb

    from churnops.bundle import export_onnx, write_bundle
    from churnops.cleaning import clean_frame
    from churnops.contract import load_contract
    from churnops.features import FeatureEncoder
    from churnops.synthetic import generate_customers

    contract = load_contract("bank_churners")
    raw = pd.read_csv(DATA) if DATA.exists() else generate_customers(10_000, seed=0)
    clean = clean_frame(raw, contract)
    enc = FeatureEncoder.from_contract(contract)
    X = enc.transform_frame(clean)
    y = clean[contract.target.name].to_numpy().astype(int)
    model = xgb.XGBClassifier(n_estimators=200, max_depth=6, learning_rate=0.1, n_jobs=2, random_state=0)
    model.fit(X, y)
    meta = {
        "model_name": "churn-xgboost",
        "dataset": "bank_churners",
        "features": contract.feature_names,
        "test_metrics": {},
        "run_id": "benchservers",
    }
    return write_bundle(path, enc, model, 0.5, meta, export_onnx(model, enc.width))


def keepalive_module(folder: Path) -> Path:
    """The former keep-alive worker as `keepalive_ref.py` in `folder` (from git, BENCH_KEEPALIVE_REF)."""
    folder.mkdir(parents=True, exist_ok=True)
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{KEEPALIVE_REF}:serving/gunicorn_worker.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (folder / "keepalive_ref.py").write_text(src)
    return folder


def argv(candidate: str, app: str, extra: Path) -> tuple[list[str], dict]:
    """Command line and extra environment of a candidate serving `app`."""
    py = sys.executable
    if candidate == "granian":
        return [py, "-m", "serving.server", app], {}
    gconf = [py, "-m", "gunicorn", "-c", "python:serving.gunicorn_conf"]
    if candidate == "gthread":
        return gconf + ["-k", "gthread", "--threads", "4", app], {}
    if candidate == "keepalive":
        return gconf + ["-k", "keepalive_ref.KeepAliveWorker", app], {
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(extra)])
        }
    raise ValueError(f"unknown server {candidate!r}")


def start(candidate: str, env: dict, folder: Path, servers: list, app: str = "serving.wsgi:app") -> tuple:
    """Start a candidate on a free port with its own state folder; (server, url) once it answers."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args, more = argv(candidate, app, folder.parent / "keepalive")
    e = (
        env
        | more
        | {
            "API_PORT": str(port),
            "API_WORKERS": str(WORKERS),
            "STATE_DIR": str(folder / "state"),
            "PROMETHEUS_MULTIPROC_DIR": str(folder / "prom"),
        }
    )
    e.pop("GUNICORN_BIND", None)
    srv = Server(args, folder / "server.log", env=e, cwd=ROOT)
    servers.append(srv)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", 120, srv.proc, folder / "server.log")
    if app == "serving.wsgi:app":
        wait_ready(url)
    return srv, url


def stop(srv, servers: list) -> None:
    srv.stop()
    if srv in servers:
        servers.remove(srv)


def worker_pids(srv) -> list[int]:
    import psutil

    try:
        kids = psutil.Process(srv.proc.pid).children()
        return [
            c.pid
            for c in kids
            if c.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(c.cmdline())
        ]
    except psutil.Error:
        return []


def throughput(url: str, pid: int, batch_body: bytes) -> dict:
    body = json.dumps(EXAMPLE).encode()
    out = {}
    for c in (1, 16, 64):
        out[f"c{c}"] = load(f"{url}/predict", body, c, seconds=SECONDS, server_pid=pid, warmup=c == 1)
    b = load(f"{url}/predict/batch", batch_body, 2, seconds=SECONDS, server_pid=pid, warmup=False)
    out["batch1000_c2"] = b | {"rows_per_s": round(b["req_per_s"] * 1000)}
    return out


def fill_logs(url: str, batch_body: bytes, n: int = 11) -> None:
    """About 11,000 logged predictions, so that GET /logs?limit=10000 is a large answer."""
    import urllib.request

    for _ in range(n):
        req = urllib.request.Request(
            f"{url}/predict/batch", data=batch_body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 (loopback)
            r.read()
    time.sleep(1.0)  # the log flushes in the background


def client_faults(port: int, seconds: float = FAULT_S) -> dict:
    """The edge's client fault scenarios against a running API (churnops/badclients.py)."""
    out = {
        "fake_end_chunked": badclients.held(port, lambda: badclients.fake_end(port, 4), seconds),
        "endless_chunked": badclients.held(port, lambda: badclients.Trickle(port, 2, every=0.0), seconds),
        "slow_oversize_upload": badclients.held(port, lambda: badclients.SlowUpload(port, n=2), seconds),
        "slow_reader": badclients.held(port, lambda: badclients.slow_reader(port, n=4), seconds),
    }
    status, err = badclients.urllib_oversize(port)
    out["urllib_8mb_body"] = {"status": status, "error": err[:120], "passed": status == 413}
    out["health_after"] = badclients.held(port, lambda: [], 1.0)
    return out


def kill_under_load(srv, url: str) -> dict:
    """SIGKILL one worker while wrk runs c=16; then /health and /predict must answer again."""
    pids = worker_pids(srv)
    body = json.dumps(EXAMPLE).encode()
    res: dict = {}
    t = threading.Thread(target=lambda: res.update(load(f"{url}/predict", body, 16, seconds=6, warmup=False)))
    t.start()
    time.sleep(2.0)
    if pids:
        os.kill(pids[0], signal.SIGKILL)
    t.join()
    port = int(url.rsplit(":", 1)[1])
    probe = badclients.probe_health(port, 4.0)
    status, _ = predict_once(url)
    alive = srv.proc.poll() is None
    return {
        "killed_pid": pids[0] if pids else None,
        "requests": res.get("requests"),
        "errors": res.get("errors"),
        "health_after": probe.summary(),
        "predict_after": status,
        "workers_after": len(worker_pids(srv)),
        "passed": alive and status == 200 and probe.failed <= 2 and len(worker_pids(srv)) == WORKERS,
    }


def predict_once(url: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"{url}/predict", data=json.dumps(EXAMPLE).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (loopback)
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def hello_ceiling(candidate: str, env: dict, folder: Path, servers: list) -> dict:
    """wrk c=16 GET on a hello-world WSGI app (bench/hello_wsgi.py) under `candidate`, 2 workers."""
    e = env | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])}
    srv, url = start(candidate, e, folder, servers, app="hello_wsgi:app")
    try:
        r = load(f"{url}/", b"", 16, seconds=SECONDS, server_pid=srv.proc.pid, method="GET")
    finally:
        stop(srv, servers)
    return r | {"server": candidate}


def passed_all(faults: dict) -> bool:
    return all(v.get("passed") for v in faults.values() if isinstance(v, dict))


def main() -> None:
    from churnops.settings import quiet_process

    quiet_process()
    tmp = Path(tempfile.mkdtemp(prefix="bench-servers-"))
    os.environ.update({"ENV_FILE": str(tmp / "none")})
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    servers: list = []
    keepalive_module(tmp / "keepalive")
    bundle = make_bundle(tmp / "bundle")
    env = {
        "MODEL_URI": str(bundle),
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "CANARY_FRACTION": "0",
        "ADMIN_TOKEN": "bench-servers-admin-token",
        "API_READ_TIMEOUT_S": "3",
    }
    batch_body = json.dumps(real_records(1000)).encode()
    result: dict = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "note": "load generator (wrk) and servers share the same cores",
        },
        "workers": WORKERS,
        "seconds_per_run": SECONDS,
        "rounds": [],
        "faults": {},
    }
    try:
        for rnd in range(ROUNDS):
            order = CANDIDATES[rnd % len(CANDIDATES) :] + CANDIDATES[: rnd % len(CANDIDATES)]
            row = {}
            for cand in order:
                srv, url = start(cand, env, tmp / f"r{rnd}-{cand}", servers)
                row[cand] = throughput(url, srv.proc.pid, batch_body)
                print(f"round {rnd} {cand}: c16 {row[cand]['c16']['req_per_s']} req/s", flush=True)
                stop(srv, servers)
            result["rounds"].append(row)
        for cand in CANDIDATES:
            srv, url = start(cand, env, tmp / f"faults-{cand}", servers)
            fill_logs(url, batch_body)
            f = client_faults(int(url.rsplit(":", 1)[1]))
            f["worker_sigkill_under_load"] = kill_under_load(srv, url)
            f["passed_all"] = passed_all(f)
            result["faults"][cand] = f
            print(f"faults {cand}: {json.dumps(f)[:800]}", flush=True)
            stop(srv, servers)
        c16 = {c: [r[c]["c16"]["req_per_s"] for r in result["rounds"]] for c in CANDIDATES}
        result["c16_req_per_s"] = c16
        fastest = max(CANDIDATES, key=lambda c: statistics.median(c16[c]))
        result["ceiling"] = [
            hello_ceiling(c, env, tmp / f"hello-{c}", servers) for c in dict.fromkeys([fastest, "gthread"])
        ]
        result["decision"] = decide(result)
    finally:
        for srv in reversed(servers):
            srv.stop()
    from table import save

    save("servers", result)
    print_table(result)


def decide(r: dict) -> dict:
    """The issue's rule on the medians of the rounds."""
    med = {c: statistics.median(v) for c, v in r["c16_req_per_s"].items()}
    others = {c: v for c, v in med.items() if c != "keepalive"}
    best_other = max(others, key=others.get) if others else None
    keep = (
        "keepalive" in med
        and best_other is not None
        and med["keepalive"] > 1.15 * med[best_other]
        and r["faults"].get("keepalive", {}).get("passed_all", False)
    )
    passing = [c for c in med if r["faults"].get(c, {}).get("passed_all")]
    winner = "keepalive" if keep else max(passing or list(others), key=med.get)
    ceiling = max((x["req_per_s"] for x in r.get("ceiling", [])), default=None)
    return {
        "c16_median_req_per_s": med,
        "winner": winner,
        "keepalive_kept": keep,
        "winner_over_keepalive_c16": round(med[winner] / med["keepalive"], 2) if "keepalive" in med else None,
        "predict_c16_over_hello_ceiling": round(med[winner] / ceiling, 2) if ceiling else None,
        "passed_every_fault": {c: r["faults"].get(c, {}).get("passed_all") for c in med},
    }


def print_table(r: dict) -> None:
    print(f"\nservers side by side ({r['workers']} workers, wrk on the same cores; {len(r['rounds'])} rounds)")
    print(f"  {'server':<10}{'round':>6}{'c=1':>9}{'c=16':>9}{'p99@16':>9}{'c=64':>9}{'batch rows/s':>14}")
    for i, row in enumerate(r["rounds"]):
        for c, x in row.items():
            print(
                f"  {c:<10}{i:>6}{x['c1']['req_per_s']:>9.0f}{x['c16']['req_per_s']:>9.0f}"
                f"{x['c16']['p99_ms']:>9.2f}{x['c64']['req_per_s']:>9.0f}{x['batch1000_c2']['rows_per_s']:>14,}"
            )
    for c, f in r["faults"].items():
        marks = " ".join(f"{k}={'ok' if v.get('passed') else 'FAIL'}" for k, v in f.items() if isinstance(v, dict))
        print(f"  faults {c:<10} {marks}")
    for x in r.get("ceiling", []):
        print(f"  hello-world ceiling on {x['server']}: {x['req_per_s']:.0f} req/s (c=16)")
    print(f"  decision: {r.get('decision')}")


if __name__ == "__main__":
    main()
