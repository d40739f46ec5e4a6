"""Fault benchmark (not a test): what clients and the prediction log see when a piece fails.

    python bench/bench_faults.py         # writes bench/results/faults.json, prints a table

Starts its own moto and MLflow servers and trains a small model like bench_serve.py (or takes
BENCH_RUN_ID with MLFLOW_TRACKING_URI / AWS_ENDPOINT_URL of running servers). Each scenario then
runs on its own API (the API's server, granian, 2 workers, embedded SQLite prediction log, its own state folder)
or consumer, so one scenario's outcome never changes another's:

a) worker_kill: SIGKILL of one API worker under load (c=16, ~8 s): requests, answers by status,
   connection errors, and predictions answered 200 that are in neither the store nor the spool
   after a graceful stop (every worker's log flushed);
b) consumer_kill: N records on the input stream, the consumer SIGKILLed twice mid-stream and
   restarted: results total / unique request ids, log entries / unique, dead letters;
c) store_down: the SQLite prediction log locked exclusively by another connection for
   BENCH_STORE_DOWN_S (30) s under load: peak RSS of the workers, records spooled, lost;
d) mlflow_down_reload: MLflow stopped, then POST /model/reload under light load: status and time
   of the answer, predictions failed while it was pending;
e) store_auth_failure: the prediction log on the MongoDB backend (MongoStore's code over mongomock,
   MongoDB itself cannot be installed here) whose driver raises pymongo's OperationFailure code 18
   (authentication failed) for BENCH_AUTH_FAIL_S (10) s under /predict load at c=8 (the API in
   process), then recovers: predictions answered 200, lost, quarantined, store calls during the
   failure, /health during it;
f) spool_full_stream: BENCH_SPOOL_STREAM_RECORDS (2000) records on the input stream; the consumer's
   SQLite log locked for BENCH_SPOOL_FULL_S (45) s (longer than its 30 s busy timeout) with a spool cap
   of 20 KB: results emitted whose prediction is neither in the store nor in the spool (during the
   outage and at the end), then every record's result once the store is back.
g) client_faults: per server candidate (bench/bench_servers.py: granian, gunicorn gthread, the
   former keep-alive worker), the edge's misbehaving clients (churnops/badclients.py: fake-end
   chunked body, endless chunked upload, slow oversize upload, slow reader of GET /logs?limit=10000,
   an 8 MB body from urllib) with /health probed every 0.25 s: answered within 2 s or not.
h) concurrent_reloads: BENCH_RELOAD_ROUNDS (5) rounds of BENCH_RELOADS (4) simultaneous POST /model/reload
   (alternately `runs:/<run>/model` and `models:/<name>/<version>`, the same model under two URIs) over
   2 workers under light load: after each round, do all workers come to serve the same generation and
   URI (within 60 s; the seconds until they agree)?
i) consumers_lease: three consumer processes on BENCH_LEASE_RECORDS records, one SIGKILLed, one
   added, the input resharded from 2 to 4 shards: duplicates and losses on `results`, log entries,
   checkpoint regressions seen in the lease table, seconds until the killed consumer's leases
   (CONSUMER_LEASE_S = BENCH_LEASE_S) were taken over.

BENCH_FAULTS_ONLY=name[,name] runs only those scenarios (MLflow is restarted when d stopped it).

It records what happens (status codes, counts) and asserts nothing: the figures are the result.
Goal: no failed request besides those in flight on a killed worker, no lost prediction.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import platform
import secrets
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench_serve import DATA, EXAMPLE, ROOT, wait_ready
from bench_serve import start_api as start_server

OUT = ROOT / "bench" / "results" / "faults.json"
KILL_LOAD_S = float(os.environ.get("BENCH_KILL_LOAD_S", "8"))
STORE_DOWN_S = float(os.environ.get("BENCH_STORE_DOWN_S", "30"))
STREAM_RECORDS = int(os.environ.get("BENCH_STREAM_RECORDS", "20000"))
AUTH_FAIL_S = float(os.environ.get("BENCH_AUTH_FAIL_S", "10"))
SPOOL_FULL_S = float(os.environ.get("BENCH_SPOOL_FULL_S", "45"))
SPOOL_STREAM_RECORDS = int(os.environ.get("BENCH_SPOOL_STREAM_RECORDS", "2000"))
CONVERGE_TIMEOUT_S = 60.0  # h) after a round of reloads, workers on different models this long count as diverged
LEASE_RECORDS = int(os.environ.get("BENCH_LEASE_RECORDS", "20000"))
LEASE_S = float(os.environ.get("BENCH_LEASE_S", "2"))
RELOAD_TIMEOUT_S = 75.0  # above gunicorn's worker timeout (60 s): a worker killed mid-reload shows as an error


# ---- load -----------------------------------------------------------------------------------------------


class Load:
    """Background HTTP load on POST /predict, one unique request_id per request; counts every outcome."""

    def __init__(self, url: str, prefix: str, concurrency: int = 16, timeout_s: float = 30.0):
        self.url, self.prefix, self.concurrency, self.timeout_s = f"{url}/predict", prefix, concurrency, timeout_s
        self.ok_ids: list[str] = []
        self.status: collections.Counter = collections.Counter()
        self.errors: collections.Counter = collections.Counter()
        self.samples: dict[int, str] = {}  # one body per non-200 status
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Load":
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 10)

    def failed(self) -> int:
        """Answers other than 200, plus connection errors, so far."""
        return sum(n for code, n in self.status.items() if code != 200) + sum(self.errors.values())

    def total(self) -> int:
        return sum(self.status.values()) + sum(self.errors.values())

    async def _run(self) -> None:
        import aiohttp

        feats = json.dumps(EXAMPLE).encode()
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        conn = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(
            connector=conn, timeout=timeout, headers={"Content-Type": "application/json"}
        ) as session:

            async def worker(w: int) -> None:
                i = 0
                while not self._stop.is_set():
                    rid = f"{self.prefix}-{w}-{i}"
                    i += 1
                    body = b'{"request_id":"' + rid.encode() + b'","features":' + feats + b"}"
                    try:
                        async with session.post(self.url, data=body) as r:
                            text = await r.read()
                            self.status[r.status] += 1
                            if r.status == 200:
                                self.ok_ids.append(rid)
                            elif r.status not in self.samples:
                                self.samples[r.status] = text[:300].decode(errors="replace")
                    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                        self.errors[type(exc).__name__] += 1
                        await asyncio.sleep(0.02)  # a refused connection would otherwise spin

            await asyncio.gather(*(worker(w) for w in range(self.concurrency)))

    def summary(self) -> dict:
        return {
            "requests": self.total(),
            "answered_200": self.status.get(200, 0),
            "non_2xx_by_status": {str(k): v for k, v in sorted(self.status.items()) if not 200 <= k < 300},
            "connection_errors": dict(self.errors),
            "non_2xx_samples": {str(k): v for k, v in self.samples.items()},
        }


# ---- helpers ----------------------------------------------------------------------------------------------


def http(
    method: str, url: str, body: dict | None = None, token: str | None = None, timeout: float = 10.0
) -> tuple[int | str, str, float]:
    """(status or error name, body text, seconds) of one request; never raises."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (loopback)
            return r.status, r.read().decode(errors="replace"), time.perf_counter() - t0
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), time.perf_counter() - t0
    except OSError as exc:
        return type(exc).__name__, str(exc)[:300], time.perf_counter() - t0


def api_env(base: dict, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    return base | {"STATE_DIR": str(folder / "state"), "PROMETHEUS_MULTIPROC_DIR": str(folder / "prom")}


def start_api(env: dict, folder: Path, servers: list):
    from ops.localservers import free_port

    port = free_port()
    srv = start_server(env, folder / "api.log", port, servers)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return srv, url


def stop_gracefully(srv, servers: list, timeout: float = 45.0) -> None:
    """SIGTERM to the gunicorn master (workers drain their logs), SIGKILL of the group only after `timeout`."""
    if srv.proc.poll() is None:
        srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(timeout)
        except Exception:  # noqa: BLE001 - still running: the Server's own stop escalates
            pass
    srv.stop()
    if srv in servers:
        servers.remove(srv)


def worker_pids(srv) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(srv.proc.pid).children()]
    except psutil.Error:
        return []


def workers_rss_mb(srv) -> tuple[float, float]:
    """(sum, max) resident memory of the API's workers in MiB."""
    import psutil

    sizes = []
    for pid in worker_pids(srv):
        try:
            sizes.append(psutil.Process(pid).memory_info().rss / 2**20)
        except psutil.Error:
            pass
    return (round(sum(sizes), 1), round(max(sizes), 1)) if sizes else (0.0, 0.0)


def spool_records(state: Path) -> tuple[int, set[str]]:
    """(records, request ids) in the spool folder (quarantine included) of a state folder."""
    n, ids = 0, set()
    spool = state / "spool"
    if not spool.exists():
        return 0, ids
    for f in spool.rglob("*"):
        if not f.is_file() or f.suffix == ".tmp":
            continue
        try:
            lines = f.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            rec = item.get("record") if isinstance(item, dict) else None
            if not isinstance(rec, dict):
                continue
            if item.get("kind") == "prediction":
                n += 1
                ids.add(str(rec.get("request_id")))
            elif item.get("kind") == "batch":
                rids = (rec.get("cols") or {}).get("request_id") or []
                n += len(rids)
                ids.update(map(str, rids))
    return n, ids


def stored_ids(state: Path) -> list[str]:
    """request_id of every prediction the embedded store answers for (as find_predictions gives them)."""
    from churnops.store.sqlite import SQLiteStore

    db = state / "predictions.db"
    if not db.exists():
        return []
    store = SQLiteStore(db)
    try:
        return [str(r.get("request_id")) for r in store.find_predictions()]
    finally:
        store.close()


def metric_total(url: str, name: str, label: str) -> float | None:
    """Sum of a Prometheus counter's samples whose labels contain `label` (None when unreachable)."""
    code, text, _ = http("GET", f"{url}/metrics")
    if code != 200:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return total


def accounting(load: Load, state: Path) -> dict:
    """Answered-200 predictions against the store and the spool, after the API stopped."""
    answered = set(load.ok_ids)
    stored = stored_ids(state)
    stored_set = set(stored)
    n_spooled, spooled = spool_records(state)
    return {
        "answered_200_unique": len(answered),
        "log_entries": len(stored),
        "answered_not_in_store": len(answered - stored_set),
        "answered_still_in_spool": len((answered - stored_set) & spooled),
        "answered_unlogged": len(answered - stored_set - spooled),
        "spool_records_left": n_spooled,
    }


# ---- scenarios --------------------------------------------------------------------------------------------


def worker_kill(env: dict, folder: Path, servers: list) -> dict:
    """a) SIGKILL one of two workers after 2 s of a KILL_LOAD_S load at c=16."""
    env = api_env(env, folder)
    srv, url = start_api(env, folder, servers)
    load = Load(url, "wk", concurrency=16).start()
    try:
        time.sleep(2.0)
        victims = worker_pids(srv)
        killed = victims[0] if victims else None
        at_kill = load.total()
        if killed:
            os.kill(killed, signal.SIGKILL)
        time.sleep(max(0.0, KILL_LOAD_S - 2.0))
    finally:
        load.stop()
    time.sleep(2.0)  # a few flush intervals
    stop_gracefully(srv, servers)
    return {
        "load_seconds": KILL_LOAD_S,
        "concurrency": 16,
        "killed_worker_pid": killed,
        "requests_before_kill": at_kill,
        **load.summary(),
        **accounting(load, Path(env["STATE_DIR"])),
    }


def read_stream(s, stream: str) -> list[dict]:
    """Every record of every shard of `stream`, from the start, decoded as JSON where it is JSON."""
    from churnops.aws import client

    kin = client("kinesis", s)
    out = []
    for shard in kin.list_shards(StreamName=stream)["Shards"]:
        it = kin.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        while it:
            r = kin.get_records(ShardIterator=it, Limit=10000)
            if not r["Records"]:
                break
            for rec in r["Records"]:
                try:
                    out.append(json.loads(rec["Data"]))
                except ValueError:
                    out.append({"raw": rec["Data"][:100].decode(errors="replace")})
            it = r.get("NextShardIterator")
    return out


def consumer_kill(s, env: dict, folder: Path, servers: list) -> dict:
    """b) STREAM_RECORDS records (1 % poison); the consumer SIGKILLed at ~25 % and ~60 %, restarted each time."""
    from churnops.aws import client, ensure_streams
    from churnops.store.sqlite import SQLiteStore
    from ops.localservers import Server

    tag = secrets.token_hex(3)
    names = {"input_stream": f"fin-{tag}", "output_stream": f"fout-{tag}", "dlq_stream": f"fdlq-{tag}"}
    s = s.model_copy(update=names | {"stream_shards": 2})
    ensure_streams(s)
    kin = client("kinesis", s)
    n, poison_every = STREAM_RECORDS, 100
    feats = json.dumps(EXAMPLE)
    recs = [
        {
            "Data": (
                b"{not json"
                if i % poison_every == poison_every - 1
                else f'{{"request_id":"ck-{i}","features":{feats}}}'.encode()
            ),
            "PartitionKey": f"k{i}",
        }
        for i in range(n)
    ]
    n_poison = sum(1 for r in recs if r["Data"].startswith(b"{not"))
    n_valid = n - n_poison
    for i in range(0, n, 500):
        kin.put_records(StreamName=s.input_stream, Records=recs[i : i + 500])
    env = (
        api_env(env, folder)
        | {k.upper(): v for k, v in names.items()}
        | {"STREAM_SHARDS": "2", "CONSUMER_POLL_INTERVAL_S": "0.05"}
    )
    db = Path(env["STATE_DIR"]) / "predictions.db"
    store: SQLiteStore | None = None

    def logged() -> int:
        nonlocal store
        if store is None:
            if not db.exists():
                return 0
            store = SQLiteStore(db)
        try:
            return store.count_predictions()
        except Exception:  # noqa: BLE001 - busy or half-created: ask again
            return -1

    kills = []
    args = [sys.executable, "-m", "serving.consumer"]
    for k, frac in enumerate((0.25, 0.6)):
        c = Server(args, folder / f"consumer{k}.log", env=env, cwd=ROOT)
        servers.append(c)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and logged() < frac * n_valid and c.proc.poll() is None:
            time.sleep(0.05)
        alive = c.proc.poll() is None
        if alive:
            os.kill(c.proc.pid, signal.SIGKILL)
        c.proc.wait(10)
        c.stop()
        servers.remove(c)
        kills.append(
            {
                "at_log_entries": logged(),
                "target_log_entries": int(frac * n_valid),
                "alive_at_kill": alive,
                "exit_code": c.proc.returncode,
            }
        )
    c = Server(args, folder / "consumer-final.log", env=env, cwd=ROOT)
    servers.append(c)
    # done when everything is logged, or when the count stopped moving for 10 s after it moved at all
    # (the restarted consumer first loads its model: no progress for a while is not the end)
    start, deadline = logged(), time.monotonic() + 120
    last, stable_since = start, time.monotonic()
    while time.monotonic() < deadline and c.proc.poll() is None:
        now = logged()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif now >= n_valid and time.monotonic() - stable_since > 2:
            break
        elif now > start and time.monotonic() - stable_since > 10:
            break
        time.sleep(0.2)
    c.stop()  # SIGTERM: finishes its batch
    servers.remove(c)
    results = read_stream(s, s.output_stream)
    dead = read_stream(s, s.dlq_stream)
    entries = stored_ids(Path(env["STATE_DIR"]))
    rids = [r.get("request_id") for r in results]
    if store is not None:
        store.close()
    return {
        "records": n,
        "valid": n_valid,
        "poison": n_poison,
        "kills": kills,
        "results_total": len(results),
        "results_unique": len(set(rids)),
        "valid_without_result": len({f"ck-{i}" for i in range(n) if i % poison_every != poison_every - 1} - set(rids)),
        "log_entries": len(entries),
        "log_entries_unique": len(set(entries)),
        "dead_letters_total": len(dead),
        "dead_letters_unique": len({(d.get("shard_id"), d.get("sequence_number")) for d in dead}),
    }


def store_down(env: dict, folder: Path, servers: list) -> dict:
    """c) the prediction log's SQLite file locked (BEGIN EXCLUSIVE) for STORE_DOWN_S under load at c=16."""
    env = api_env(env, folder)
    state = Path(env["STATE_DIR"])
    srv, url = start_api(env, folder, servers)
    load = Load(url, "sd", concurrency=16).start()
    lock = None
    try:
        time.sleep(3.0)
        base_sum, base_max = workers_rss_mb(srv)
        db = state / "predictions.db"
        lock = sqlite3.connect(str(db), timeout=30, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        t0 = time.monotonic()
        peak_sum, peak_max, peak_spool, health = base_sum, base_max, 0, []
        i = 0
        while time.monotonic() - t0 < STORE_DOWN_S:
            rss_sum, rss_max = workers_rss_mb(srv)
            peak_sum, peak_max = max(peak_sum, rss_sum), max(peak_max, rss_max)
            if i % 10 == 0:
                peak_spool = max(peak_spool, spool_records(state)[0])
                code, text, _ = http("GET", f"{url}/health", timeout=3)
                try:
                    h = json.loads(text) if code == 200 else {}
                except ValueError:
                    h = {}
                health.append(
                    {
                        "t_s": round(time.monotonic() - t0, 1),
                        "status": code,
                        **{k: h[k] for k in ("store_ok", "log_pending") if k in h},
                    }
                )
            i += 1
            time.sleep(0.5)
        during = load.summary()
        lock.rollback()
        lock.close()
        time.sleep(5.0)  # the store is back under load
    finally:
        load.stop()
        if lock is not None:
            lock.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and spool_records(state)[0]:  # replay
        time.sleep(1.0)
    spooled_metric = metric_total(url, "churn_prediction_log_records_total", 'outcome="spooled"')
    stop_gracefully(srv, servers)
    return {
        "store_down_seconds": STORE_DOWN_S,
        "concurrency": 16,
        "workers_rss_mb_before": {"sum": base_sum, "max": base_max},
        "workers_rss_mb_peak": {"sum": peak_sum, "max": peak_max},
        "spool_records_peak_seen": peak_spool,
        "spooled_records_metric": spooled_metric,
        "health_during": health,
        "answered_200_while_down": during["answered_200"],
        **load.summary(),
        **accounting(load, state),
    }


def mlflow_down_reload(env: dict, folder: Path, servers: list, mlflow_srv, run_id: str, token: str) -> dict:
    """d) MLflow stopped, then POST /model/reload (admin) while c=4 load runs."""
    env = api_env(env, folder)
    srv, url = start_api(env, folder, servers)
    load = Load(url, "md", concurrency=4).start()
    time.sleep(2.0)
    if mlflow_srv is not None:
        mlflow_srv.stop()
        if mlflow_srv in servers:
            servers.remove(mlflow_srv)
    try:
        mlflow_up = http("GET", f"{os.environ.get('MLFLOW_TRACKING_URI', '')}/health", timeout=3)[0]
        f0, n0 = load.failed(), load.total()
        code, text, secs = http(
            "POST", f"{url}/model/reload", {"run_id": run_id}, token=token, timeout=RELOAD_TIMEOUT_S
        )
        f1, n1 = load.failed(), load.total()
        time.sleep(3.0)
    finally:
        load.stop()
    after = {p: http("GET", f"{url}{p}", timeout=5)[:2] for p in ("/ready", "/model")}
    stop_gracefully(srv, servers)
    return {
        "mlflow_health_after_stop": mlflow_up,
        "reload_status": code,
        "reload_seconds": round(secs, 2),
        "reload_body": text[:400],
        "requests_while_pending": n1 - n0,
        "failed_while_pending": f1 - f0,
        "after": {p: {"status": c, "body": b[:300]} for p, (c, b) in after.items()},
        **load.summary(),
    }


class _AuthFailingDB:
    """A mongomock database whose collections' writes raise pymongo's OperationFailure code 18 while
    `state["failing"]` (what a MongoDB server answers when the credentials are refused); counts them."""

    def __init__(self, db, state: dict):
        self._db, self._state = db, state

    def __getattr__(self, name):
        coll, state = getattr(self._db, name), self._state

        class Coll:
            def __getattr__(self, attr):
                fn = getattr(coll, attr)
                if attr not in ("insert_many", "insert_one", "update_one", "replace_one"):
                    return fn

                def write(*a, **kw):
                    from pymongo.errors import OperationFailure

                    with state["lock"]:
                        state["calls"] += 1
                        if state["failing"]:
                            state["calls_failing"] += 1
                            raise OperationFailure("Authentication failed.", code=18)
                        return fn(*a, **kw)  # mongomock is not thread-safe: one write at a time

                return write

        return Coll()


def store_auth_failure(s, folder: Path) -> dict:
    """e) MongoDB refusing the credentials for AUTH_FAIL_S under /predict load at c=8, then recovering."""
    import mongomock

    from churnops.store.mongo import MongoStore
    from serving.app import create_app
    from serving.model import ModelManager

    state = {"failing": False, "calls": 0, "calls_failing": 0, "lock": threading.Lock()}
    store = MongoStore(mongomock.MongoClient(), "churn", label="MongoDB mongodb://churn:***@mongo:27017 (mongomock)")
    store.db = _AuthFailingDB(store.db, state)
    s = s.model_copy(update={"state_dir": folder / "state", "log_retry_max_s": 2.0})
    mm = ModelManager(s)
    mm.current = mm.load_initial()
    app = create_app(s, store=store, models=mm, start_background=False)
    plog = app.extensions["churn"].plog
    plog.replay_interval_s = 0.5
    plog.start()
    ok_ids: list[str] = []
    statuses: collections.Counter = collections.Counter()
    stop = threading.Event()
    body = {"features": EXAMPLE}

    def client(w: int) -> None:
        c, i = app.test_client(), 0
        while not stop.is_set():
            rid = f"af-{w}-{i}"
            i += 1
            r = c.post("/predict", json={**body, "request_id": rid})
            statuses[r.status_code] += 1
            if r.status_code == 200:
                ok_ids.append(rid)
            time.sleep(0.005)

    threads = [threading.Thread(target=client, args=(w,), daemon=True) for w in range(8)]
    for th in threads:
        th.start()
    health = []
    try:
        time.sleep(2.0)
        state["failing"] = True
        t0 = time.monotonic()
        before = len(ok_ids)
        while time.monotonic() - t0 < AUTH_FAIL_S:
            time.sleep(1.0)
            h = app.test_client().get("/health").json
            pl = h["prediction_log"]
            health.append(
                {
                    "t_s": round(time.monotonic() - t0, 1),
                    "status": h["status"],
                    "degraded": pl["degraded"],
                    "store_error": pl.get("store_error"),
                    "quarantined": pl["quarantined"],
                }
            )
        during = len(ok_ids) - before
        state["failing"] = False
        time.sleep(3.0)  # recovered, under load
    finally:
        stop.set()
        for th in threads:
            th.join(30)
    plog.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and plog.spool_files():
        plog.replay()
        time.sleep(0.5)
    with state["lock"]:
        stored = {str(r["request_id"]) for r in store.find_predictions()}
    answered = set(ok_ids)
    st = plog.status()
    return {
        "auth_failure_seconds": AUTH_FAIL_S,
        "concurrency": 8,
        "answered_200": len(ok_ids),
        "answered_200_during_failure": during,
        "non_200": {str(k): v for k, v in statuses.items() if k != 200},
        "store_calls_during_failure": state["calls_failing"],
        "health_during": health,
        "lost": len(answered - stored),
        "quarantined": st["quarantined"],
        "quarantine_files": st["quarantine_files"],
        "dropped": st["dropped"],
        "spooled": st["spooled"],
        "written": plog.written,
        "store_ok_after": st["store_ok"],
    }


def spool_full_stream(s, env: dict, folder: Path, servers: list) -> dict:
    """f) the consumer's store locked and its spool full: nothing may be emitted that is not logged."""
    from churnops.aws import client, ensure_streams
    from churnops.store.sqlite import SQLiteStore
    from ops.localservers import Server

    tag = secrets.token_hex(3)
    names = {"input_stream": f"sin-{tag}", "output_stream": f"sout-{tag}", "dlq_stream": f"sdlq-{tag}"}
    s = s.model_copy(update=names | {"stream_shards": 2})
    ensure_streams(s)
    kin = client("kinesis", s)
    n = SPOOL_STREAM_RECORDS
    feats = json.dumps(EXAMPLE)
    recs = [
        {"Data": f'{{"request_id":"sf-{i}","features":{feats}}}'.encode(), "PartitionKey": f"k{i}"} for i in range(n)
    ]
    env = (
        api_env(env, folder)
        | {k.upper(): v for k, v in names.items()}
        | {"STREAM_SHARDS": "2", "CONSUMER_POLL_INTERVAL_S": "0.05", "SPOOL_MAX_BYTES": "20000"}
        | {"LOG_RETRY_MAX_S": "2", "STREAM_BACKOFF_MAX_S": "2", "CONSUMER_BATCH_SIZE": "100"}
    )
    state = Path(env["STATE_DIR"])
    db = state / "predictions.db"
    state.mkdir(parents=True, exist_ok=True)
    SQLiteStore(db).ping()  # the file exists (WAL) before it is locked
    # first half before the outage, so the consumer has its model and is running
    for i in range(0, n // 2, 500):
        kin.put_records(StreamName=s.input_stream, Records=recs[i : min(i + 500, n // 2)])
    c = Server([sys.executable, "-m", "serving.consumer"], folder / "consumer.log", env=env, cwd=ROOT)
    servers.append(c)
    reader = SQLiteStore(db)

    def logged_ids() -> set[str]:
        return {str(r["request_id"]) for r in reader.find_predictions()}

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(logged_ids()) < n // 2 and c.proc.poll() is None:
        time.sleep(0.2)
    lock = sqlite3.connect(str(db), timeout=30, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    for i in range(n // 2, n, 500):
        kin.put_records(StreamName=s.input_stream, Records=recs[i : min(i + 500, n)])
    t0 = time.monotonic()
    samples = []
    while time.monotonic() - t0 < SPOOL_FULL_S:
        time.sleep(5.0)
        emitted = {r.get("request_id") for r in read_stream(s, s.output_stream)}
        kept = logged_ids() | spool_records(state)[1]
        samples.append(
            {
                "t_s": round(time.monotonic() - t0, 1),
                "results_emitted": len(emitted),
                "emitted_not_logged_nor_spooled": len(emitted - kept),
                "spool_bytes": sum(p.stat().st_size for p in (state / "spool").glob("*") if p.is_file())
                if (state / "spool").exists()
                else 0,
            }
        )
    lock.rollback()
    lock.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(logged_ids()) < n and c.proc.poll() is None:
        time.sleep(0.5)
    time.sleep(2.0)
    c.stop()
    servers.remove(c)
    results = read_stream(s, s.output_stream)
    rids = [r.get("request_id") for r in results]
    logged = logged_ids()
    reader.close()
    text = (folder / "consumer.log").read_text(errors="replace") if (folder / "consumer.log").exists() else ""
    return {
        "records": n,
        "store_locked_seconds": SPOOL_FULL_S,
        "spool_max_bytes": 20000,
        "during_outage": samples,
        "emitted_not_logged_max_during": max((x["emitted_not_logged_nor_spooled"] for x in samples), default=0),
        "batches_refused_not_logged": text.count("NotLogged"),
        "results_total": len(results),
        "results_unique": len(set(rids)),
        "without_result": len({f"sf-{i}" for i in range(n)} - set(rids)),
        "log_entries_unique": len(logged),
        "emitted_not_logged_at_end": len(set(rids) - logged),
    }


def model_views(url: str, n: int = 24) -> dict[int, tuple]:
    """pid -> (generation, champion uri) of the workers answering `n` fresh connections to GET /model."""
    seen: dict[int, tuple] = {}
    for _ in range(n):
        code, text, _ = http("GET", f"{url}/model", timeout=5)
        if code == 200:
            body = json.loads(text)
            seen[int(body["pid"])] = (body.get("generation"), body["champion"]["uri"])
    return seen


def concurrent_reloads(env: dict, folder: Path, servers: list, run_id: str, token: str) -> dict:
    """h) rounds of simultaneous POST /model/reload over 2 workers: do all workers end on one generation and model?"""
    from concurrent.futures import ThreadPoolExecutor

    rounds = int(os.environ.get("BENCH_RELOAD_ROUNDS", "5"))
    per_round = int(os.environ.get("BENCH_RELOADS", "4"))
    env = api_env(env, folder)
    srv, url = start_api(env, folder, servers)
    load = Load(url, "cr", concurrency=2).start()
    code, text, _ = http("GET", f"{url}/model", timeout=5)
    version = json.loads(text)["champion"].get("version") if code == 200 else None
    name = os.environ.get("MODEL_NAME", "churn-xgboost")
    uris = [f"runs:/{run_id}/model"] + ([f"models:/{name}/{version}"] if version else [])
    outcomes: collections.Counter = collections.Counter()
    per_round_views, diverged, converge_s = [], 0, []
    try:
        for r in range(rounds):
            bodies = [{"model_uri": uris[(r + i) % len(uris)]} for i in range(per_round)]
            with ThreadPoolExecutor(per_round) as ex:
                answers = list(
                    ex.map(
                        lambda b: http("POST", f"{url}/model/reload", b, token=token, timeout=RELOAD_TIMEOUT_S), bodies
                    )
                )
            jobs = []
            for code, text, _ in answers:
                outcomes[str(code)] += 1
                if code == 202:
                    jobs.append(json.loads(text)["status_url"])
            deadline = time.monotonic() + RELOAD_TIMEOUT_S
            finals = []
            for job in jobs:
                while time.monotonic() < deadline:
                    c, t, _ = http("GET", f"{url}{job}", token=token, timeout=5)
                    st = json.loads(t).get("status") if c == 200 else "unknown"
                    if st != "pending":
                        finals.append(st)
                        break
                    time.sleep(0.2)
            for st in finals:
                outcomes[f"job {st}"] += 1
            # the other worker follows the state file (polled every 1 s) once it has loaded the model itself
            t_done, views = time.monotonic(), {}
            while time.monotonic() - t_done < CONVERGE_TIMEOUT_S:
                views = model_views(url)
                if len(views) >= 2 and len(set(views.values())) == 1:
                    break
                time.sleep(0.5)
            converge_s.append(round(time.monotonic() - t_done, 2))
            per_round_views.append({str(pid): list(v) for pid, v in views.items()})
            diverged += len(set(views.values())) > 1
    finally:
        load.stop()
    stop_gracefully(srv, servers)
    last = per_round_views[-1] if per_round_views else {}
    return {
        "rounds": rounds,
        "reloads_per_round": per_round,
        "uris": uris,
        "answers": dict(outcomes),
        "rounds_with_workers_on_different_models": diverged,  # still different after CONVERGE_TIMEOUT_S
        "seconds_until_workers_agree": converge_s,
        "workers_seen_last_round": len(last),
        "last_round": last,
        "all_workers_same_generation_and_model": diverged == 0,
        **load.summary(),
    }


def restart_mlflow(tmp: Path, servers: list, mlf):
    """MLflow again on its folder when scenario d stopped it (a new port; MLFLOW_TRACKING_URI follows)."""
    from ops.localservers import start_mlflow

    if mlf is None or mlf.proc.poll() is None:
        return mlf
    mlf, url = start_mlflow(tmp / "mlflow")
    servers.append(mlf)
    os.environ["MLFLOW_TRACKING_URI"] = url
    return mlf


# ---- main ---------------------------------------------------------------------------------------------------


def client_faults(env: dict, folder: Path, servers: list) -> dict:
    """The edge's misbehaving clients against each server candidate (bench/bench_servers.py)."""
    import bench_servers as bs

    body = json.dumps(bs.real_records(1000)).encode()
    bs.keepalive_module(folder / "keepalive")
    out = {}
    for cand in bs.CANDIDATES:
        srv, url = bs.start(cand, env | {"API_READ_TIMEOUT_S": "3"}, folder / cand, servers)
        try:
            bs.fill_logs(url, body)
            out[cand] = bs.client_faults(int(url.rsplit(":", 1)[1]))
        finally:
            bs.stop(srv, servers)
        out[cand]["passed_all"] = bs.passed_all(out[cand])
    return out


def consumers_lease(s, env: dict, folder: Path, servers: list) -> dict:
    """i) three consumers, c0 SIGKILLed at ~25 %, c3 added and the input resharded 2 -> 4 at ~50 %."""
    from churnops.aws import client, ensure_streams
    from churnops.store.sqlite import SQLiteStore
    from ops.localservers import Server

    tag = secrets.token_hex(3)
    names = {"input_stream": f"lin-{tag}", "output_stream": f"lout-{tag}", "dlq_stream": f"ldlq-{tag}"}
    s = s.model_copy(update=names | {"stream_shards": 2})
    ensure_streams(s)
    kin = client("kinesis", s)
    n = LEASE_RECORDS
    feats = json.dumps(EXAMPLE)

    def put(lo: int, hi: int) -> None:
        for a in range(lo, hi, 500):
            recs = [
                {"Data": f'{{"request_id":"le-{i}","features":{feats}}}'.encode(), "PartitionKey": f"k{i % 100}"}
                for i in range(a, min(hi, a + 500))
            ]
            kin.put_records(StreamName=s.input_stream, Records=recs)

    env = (
        api_env(env, folder)
        | {k.upper(): v for k, v in names.items()}
        | {"STREAM_SHARDS": "2", "CONSUMER_POLL_INTERVAL_S": "0.05", "CONSUMER_LEASE_S": str(LEASE_S)}
    )
    db = Path(env["STATE_DIR"]) / "predictions.db"
    created = kin.describe_stream_summary(StreamName=s.input_stream)["StreamDescriptionSummary"]
    prefix = f"kinesis:{s.input_stream}:{round(created['StreamCreationTimestamp'].timestamp() * 1000)}:"
    store: SQLiteStore | None = None

    def open_store() -> SQLiteStore | None:
        nonlocal store
        if store is None and db.exists():
            store = SQLiteStore(db)
        return store

    def logged() -> int:
        try:
            return open_store().count_predictions() if open_store() else 0
        except Exception:  # noqa: BLE001 - busy or half-created: ask again
            return -1

    def leases() -> list:
        try:
            return open_store().list_leases(prefix) if open_store() else []
        except Exception:  # noqa: BLE001 - table not there yet, or busy
            return []

    regressions, seen, stop = [0], {}, threading.Event()

    def watch() -> None:  # checkpoint regressions as the lease table shows them
        while not stop.is_set():
            for lease in leases():
                if lease.seq and lease.seq < seen.get(lease.key, ""):
                    regressions[0] += 1
                seen[lease.key] = max(seen.get(lease.key, ""), lease.seq)
            time.sleep(0.1)

    args = [sys.executable, "-m", "serving.consumer"]
    procs = {}

    def start(name: str) -> None:
        procs[name] = Server(args, folder / f"{name}.log", env=env | {"CONSUMER_ID": name}, cwd=ROOT)
        servers.append(procs[name])

    put(0, n // 2)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for name in ("c0", "c1", "c2"):
        start(name)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and logged() < n // 4:
        time.sleep(0.05)
    held = {lease.key for lease in leases() if lease.owner == "c0" and lease.expires > time.time()}
    os.kill(procs["c0"].proc.pid, signal.SIGKILL)
    t_kill = time.monotonic()
    procs["c0"].proc.wait(10)
    takeover_s = None
    while time.monotonic() - t_kill < 60 and held:
        now = {lease.key: lease for lease in leases()}
        if all(now[k].owner not in (None, "c0") or now[k].finished for k in held if k in now):
            takeover_s = round(time.monotonic() - t_kill, 2)
            break
        time.sleep(0.05)
    put(n // 2, 3 * n // 4)
    kin.update_shard_count(StreamName=s.input_stream, TargetShardCount=4, ScalingType="UNIFORM_SCALING")
    start("c3")
    put(3 * n // 4, n)
    start_n, deadline = logged(), time.monotonic() + 300
    last, stable_since = start_n, time.monotonic()
    while time.monotonic() < deadline:
        now_n = logged()
        if now_n != last:
            last, stable_since = now_n, time.monotonic()
        elif now_n >= n and time.monotonic() - stable_since > 2:
            break
        elif time.monotonic() - stable_since > 30:
            break
        time.sleep(0.2)
    t_done = time.monotonic() - t_kill
    for name in ("c1", "c2", "c3"):
        procs[name].stop()  # SIGTERM: the batch in flight, then the leases handed back
        servers.remove(procs[name])
    servers.remove(procs["c0"])
    stop.set()
    watcher.join(5)
    results = read_stream(s, s.output_stream)
    positions = collections.Counter((r.get("shard_id"), r.get("sequence_number")) for r in results)
    rids = {r.get("request_id") for r in results}
    entries = stored_ids(Path(env["STATE_DIR"]))
    final = leases()
    if store is not None:
        store.close()
    return {
        "records": n,
        "lease_seconds": LEASE_S,
        "killed_consumer_leases": len(held),
        "takeover_seconds": takeover_s,
        "seconds_from_kill_to_all_logged": round(t_done, 1),
        "results_total": len(results),
        "results_duplicated": sum(c - 1 for c in positions.values() if c > 1),
        "records_without_result": len({f"le-{i}" for i in range(n)} - rids),
        "log_entries": len(entries),
        "log_entries_unique": len(set(entries)),
        "checkpoint_regressions_seen": regressions[0],
        "leases": len(final),
        "leases_finished": sum(1 for lease in final if lease.finished),
    }


def setup(tmp: Path, servers: list, result: dict):
    """moto + MLflow + a small trained model (or BENCH_RUN_ID): (settings, run id, the MLflow Server or None)."""
    from churnops.aws import ensure_bucket, ensure_streams
    from churnops.settings import get_settings
    from ops.localservers import start_mlflow, start_moto

    run_id = os.environ.get("BENCH_RUN_ID")
    mlf = None
    if not run_id:
        if not DATA.exists():
            sys.exit(f"bench-faults needs the real data file at {DATA} (or BENCH_RUN_ID + running servers)")
        (tmp / "moto").mkdir(), (tmp / "mlflow").mkdir()
        moto, moto_url = start_moto(tmp / "moto")
        servers.append(moto)
        mlf, mlflow_url = start_mlflow(tmp / "mlflow")
        servers.append(mlf)
        os.environ.update({"AWS_ENDPOINT_URL": moto_url, "MLFLOW_TRACKING_URI": mlflow_url})
        get_settings.cache_clear()
        s = get_settings()
        ensure_bucket(s), ensure_streams(s)
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            from flows.train_flow import train_flow

            t0 = time.perf_counter()
            summary = train_flow(n_trials=3, data=str(DATA), data_profile=False)
            result["train_seconds"] = round(time.perf_counter() - t0, 1)
        run_id = summary["run_id"]
    os.environ["RUN_ID"] = run_id
    get_settings.cache_clear()
    return get_settings(), run_id, mlf


def main() -> None:
    from churnops.settings import quiet_process

    quiet_process()  # MLflow telemetry / Prefect analytics off here and in every server started below
    tmp = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    os.environ.update(
        {
            "ENV_FILE": str(tmp / "none"),
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
            "STATE_DIR": str(tmp / "state"),
        }
    )
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    servers: list = []
    token = secrets.token_hex(16)
    result: dict = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "note": "load generator, API server, consumer, moto and MLflow share the same cores",
        },
        "goal": "no failed request besides those in flight on a killed worker; no lost prediction",
    }
    t_start = time.perf_counter()
    # BENCH_FAULTS_ONLY=consumers_lease,...: only these scenarios, printed, results file left alone
    only = {x.strip() for x in os.environ.get("BENCH_FAULTS_ONLY", "").split(",") if x.strip()}
    try:
        s, run_id, mlf = setup(tmp, servers, result)
        result["run_id"] = run_id
        env = {"RUN_ID": run_id, "ADMIN_TOKEN": token, "API_WORKERS": "2"}
        scenarios = [
            ("worker_kill", lambda: worker_kill(env, tmp / "a", servers)),
            ("consumer_kill", lambda: consumer_kill(s, env, tmp / "b", servers)),
            ("store_down", lambda: store_down(env, tmp / "c", servers)),
            ("store_auth_failure", lambda: store_auth_failure(s, tmp / "e")),
            ("spool_full_stream", lambda: spool_full_stream(s, env, tmp / "f", servers)),
            ("client_faults", lambda: client_faults(env, tmp / "g", servers)),
            ("consumers_lease", lambda: consumers_lease(s, env, tmp / "i", servers)),
        ]
        scenarios.append(
            (
                "concurrent_reloads",
                lambda: (
                    restart_mlflow(tmp, servers, mlf),
                    concurrent_reloads(env, tmp / "h", servers, run_id, token),
                )[1],
            )
        )
        # last: it stops MLflow, which every other scenario's model load needs
        scenarios.append(
            ("mlflow_down_reload", lambda: mlflow_down_reload(env, tmp / "d", servers, mlf, run_id, token))
        )
        scenarios = [(n, f) for n, f in scenarios if not only or n in only]
        for name, fn in scenarios:
            t0 = time.perf_counter()
            try:
                result[name] = fn()
            except Exception as exc:  # noqa: BLE001 - one scenario's failure is its result; the next one runs
                result[name] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            result[name]["scenario_seconds"] = round(time.perf_counter() - t0, 1)
            print(f"{name}: {json.dumps(result[name], default=str)[:600]}", flush=True)
    finally:
        for srv in reversed(servers):
            srv.stop()
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    from table import save  # bench/table.py: the one results table

    if only:
        print(json.dumps(result, indent=1, default=str))
    else:
        save("faults", result)
    print_table(result)


def print_table(r: dict) -> None:
    def g(section: str, key: str, default="-"):
        return r.get(section, {}).get(key, default)

    print(f"\nfault benchmark ({r.get('total_seconds')} s; 2 API workers, embedded SQLite log; goal: {r['goal']})")
    for name in (
        "worker_kill",
        "consumer_kill",
        "store_down",
        "mlflow_down_reload",
        "store_auth_failure",
        "spool_full_stream",
        "client_faults",
        "concurrent_reloads",
        "consumers_lease",
    ):
        if "error" in r.get(name, {}):
            print(f"  {name:<20} ERROR {r[name]['error']}")
    if "error" not in r.get("worker_kill", {"error": 1}):
        print(
            f"  a) worker SIGKILL under load   requests {g('worker_kill', 'requests')}, non-2xx "
            f"{g('worker_kill', 'non_2xx_by_status')}, connection errors {g('worker_kill', 'connection_errors')}, "
            f"answered-200-but-unlogged {g('worker_kill', 'answered_unlogged')} "
            f"(still in spool {g('worker_kill', 'answered_still_in_spool')})"
        )
    if "error" not in r.get("consumer_kill", {"error": 1}):
        print(
            f"  b) consumer SIGKILL x2         results {g('consumer_kill', 'results_unique')} unique / "
            f"{g('consumer_kill', 'results_total')} total of {g('consumer_kill', 'valid')} valid "
            f"(without result {g('consumer_kill', 'valid_without_result')}); log entries "
            f"{g('consumer_kill', 'log_entries_unique')} unique / {g('consumer_kill', 'log_entries')}; DLQ "
            f"{g('consumer_kill', 'dead_letters_total')} for {g('consumer_kill', 'poison')} poison records"
        )
    if "error" not in r.get("store_down", {"error": 1}):
        print(
            f"  c) store down {g('store_down', 'store_down_seconds'):.0f} s under load  workers' RSS peak "
            f"{g('store_down', 'workers_rss_mb_peak')} MiB (before {g('store_down', 'workers_rss_mb_before')}), "
            f"spooled {g('store_down', 'spooled_records_metric')} (peak in spool "
            f"{g('store_down', 'spool_records_peak_seen')}), lost {g('store_down', 'answered_unlogged')} of "
            f"{g('store_down', 'answered_200_unique')}; non-2xx {g('store_down', 'non_2xx_by_status')}, "
            f"connection errors {g('store_down', 'connection_errors')}"
        )
    for cand, f in r.get("client_faults", {}).items():
        if isinstance(f, dict) and "passed_all" in f:
            marks = " ".join(f"{k}={'ok' if v.get('passed') else 'FAIL'}" for k, v in f.items() if isinstance(v, dict))
            print(f"  e) client faults, {cand:<10} {marks}")
    if "error" not in r.get("mlflow_down_reload", {"error": 1}):
        print(
            f"  d) MLflow down, /model/reload  answered {g('mlflow_down_reload', 'reload_status')} after "
            f"{g('mlflow_down_reload', 'reload_seconds')} s; predictions failed meanwhile "
            f"{g('mlflow_down_reload', 'failed_while_pending')} of {g('mlflow_down_reload', 'requests_while_pending')}"
        )
    if "error" not in r.get("store_auth_failure", {"error": 1}):
        print(
            f"  e) MongoDB auth failure {g('store_auth_failure', 'auth_failure_seconds'):.0f} s  answered 200 "
            f"{g('store_auth_failure', 'answered_200')} ({g('store_auth_failure', 'answered_200_during_failure')} "
            f"during), lost {g('store_auth_failure', 'lost')}, quarantined {g('store_auth_failure', 'quarantined')}, "
            f"store calls while failing {g('store_auth_failure', 'store_calls_during_failure')}"
        )
    if "error" not in r.get("spool_full_stream", {"error": 1}):
        print(
            f"  f) spool full under the stream  emitted-not-logged during {g('spool_full_stream', 'emitted_not_logged_max_during')}"
            f", at the end {g('spool_full_stream', 'emitted_not_logged_at_end')}; results "
            f"{g('spool_full_stream', 'results_unique')} unique / {g('spool_full_stream', 'results_total')} of "
            f"{g('spool_full_stream', 'records')} (without result {g('spool_full_stream', 'without_result')})"
        )
    if "error" not in r.get("concurrent_reloads", {"error": 1}):
        print(
            f"  h) concurrent reloads          {g('concurrent_reloads', 'rounds')} rounds x "
            f"{g('concurrent_reloads', 'reloads_per_round')} over 2 workers: answers {g('concurrent_reloads', 'answers')}; "
            f"rounds ending with workers on different models {g('concurrent_reloads', 'rounds_with_workers_on_different_models')}"
            f" (seconds until they agreed {g('concurrent_reloads', 'seconds_until_workers_agree')})"
        )
    if "error" not in r.get("consumers_lease", {"error": 1}):
        print(
            f"  i) 3 consumers, kill+join+reshard  {g('consumers_lease', 'records')} records: results duplicated "
            f"{g('consumers_lease', 'results_duplicated')}, without result "
            f"{g('consumers_lease', 'records_without_result')}, log {g('consumers_lease', 'log_entries_unique')} "
            f"unique / {g('consumers_lease', 'log_entries')}; checkpoint regressions "
            f"{g('consumers_lease', 'checkpoint_regressions_seen')}; takeover of "
            f"{g('consumers_lease', 'killed_consumer_leases')} expired lease(s) in "
            f"{g('consumers_lease', 'takeover_seconds')} s (leases of {g('consumers_lease', 'lease_seconds')} s)"
        )


if __name__ == "__main__":
    main()
