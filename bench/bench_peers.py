"""Peers side by side (not a test): our API against BentoML and Seldon MLServer on the same booster.

    python bench/bench_peers.py                  # writes bench/results/peers.json, prints a table
    BENCH_PEERS_SECONDS=5 python bench/bench_peers.py
    python bench/bench_peers.py --install-only   # just create the peers' virtualenvs

Each peer lives in its own virtualenv under bench/ (bench/.venv-bentoml, bench/.venv-mlserver),
created on first use from PyPI (its install time is recorded) with the same XGBoost version as
ours. One XGBoost model is trained here with the project's own code (`churnops.pipeline.prepare`,
`churnops.training.make_classifier`) on ../shared/data/bank_churners.csv, or on the synthetic
generator's customers when the real file is absent (the result says which); its bundle is what
our API serves and its `booster.json` is what both peers load.

Servers, one at a time, 2 workers each, 1 XGBoost/ONNX thread per worker:
* ours: the API started with the embedded stack's own command line (`ops.services.api_argv`),
  raw customer records in (`POST /predict`, `POST /predict/batch`): validation, encoding, the
  prediction log and its metrics included;
* BentoML (`bentoml serve`, bench/peers/bentoml_service.py), adaptive batching on and off;
* MLServer with its XGBoost runtime (`mlserver start`, `parallel_workers: 2`), adaptive batching
  on and off; Open Inference Protocol request (its runtime's `predict` output: the probability).
The peers get the rows already encoded as floats (their runtimes have no data contract), so they do
less work per request than ours. Before any timing each server's probabilities on 1,000 distinct
real rows (and a few single rows) must match the booster's within 1e-5.
Load: wrk (one thread) at c=1/16/64 on one row per request, and 1,000 distinct rows per request
at c=2; per cell req/s, p50/p99 and rows/s; then our ratio to each peer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ops.localservers import Server, free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DATA = ROOT.parent / "shared" / "data" / "bank_churners.csv"
SECONDS = float(os.environ.get("BENCH_PEERS_SECONDS", "10"))
CONCURRENCIES = (1, 16, 64)
BATCH_ROWS = 1000
BATCH_CONCURRENCY = 2
TOLERANCE = 1e-5
WORKERS = 2
MODEL_NAME = "churn"


# ---- the peers' virtualenvs ---------------------------------------------------------------------------


def peer_requirements(xgboost_version: str) -> dict[str, list[str]]:
    """What each peer's virtualenv holds (our XGBoost version in both, so both run the same trees)."""
    return {
        "bentoml": ["bentoml==1.4.40", f"xgboost=={xgboost_version}"],
        # mlserver 1.7.1's workers crash on uvloop 0.22
        "mlserver": ["mlserver==1.7.1", "mlserver-xgboost==1.7.1", "uvloop<0.21", f"xgboost=={xgboost_version}"],
    }


def venv_dir(peer: str) -> Path:
    return BENCH / f".venv-{peer}"


def ensure_venv(peer: str, requirements: list[str]) -> dict:
    """Create bench/.venv-<peer> with `requirements` unless it already holds exactly them.

    Returns how long its install took (kept in the venv's stamp file, so a reused venv still says),
    whether this run made it, and the installed versions.
    """
    d = venv_dir(peer)
    stamp = d / ".bench-peers.json"
    made = json.loads(stamp.read_text()) if stamp.exists() else {}
    fresh = made.get("requirements") != requirements or not (d / "bin" / "python").exists()
    if fresh:
        shutil.rmtree(d, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(d)], check=True)
        subprocess.run(
            [str(d / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", *requirements],
            check=True,
        )
        made = {
            "requirements": requirements,
            "install_seconds": round(time.perf_counter() - t0, 1),
            "installed_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        stamp.write_text(json.dumps(made))
    names = [r.split("=")[0].split("<")[0] for r in requirements]
    out = subprocess.run(
        [str(d / "bin" / "python"), "-c", "import sys, importlib.metadata as m; "
         "print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))", *names],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return made | {"made_by_this_run": fresh, "installed": out.stdout.split(), "path": str(d.relative_to(ROOT))}


# ---- the model -------------------------------------------------------------------------------------------


@dataclass
class Model:
    """The bundle our API serves, the booster file the peers load, and the rows sent to everyone."""

    bundle_dir: Path
    booster_file: Path
    single_record: dict
    batch_records: list[dict]
    check_records: list[dict]
    encoded_single: list[float]
    encoded_batch: list[list[float]]
    encoded_check: list[list[float]]
    expected_batch: list[float]
    expected_check: list[float]
    info: dict = field(default_factory=dict)


def build_model(folder: Path) -> Model:
    """Train one XGBoost classifier with the project's code and write its bundle under `folder`."""
    import numpy as np
    import pandas as pd
    from bench_serve import EXAMPLE, real_records

    from churnops.bundle import Bundle, export_onnx, write_bundle
    from churnops.cleaning import clean_frame
    from churnops.contract import load_contract, validate_record
    from churnops.evaluation import auc
    from churnops.pipeline import prepare
    from churnops.settings import Settings
    from churnops.synthetic import generate_customers
    from churnops.training import make_classifier

    contract = load_contract("bank_churners")
    s = Settings(_env_file=None)
    real = DATA.exists()
    raw = pd.read_csv(DATA) if real else generate_customers(10_000, seed=0)
    prep = prepare(clean_frame(raw, contract), contract, s)
    params = {"max_depth": 5, "learning_rate": 0.1, "subsample": 0.9, "colsample_bytree": 0.9}
    model = make_classifier(params, s.seed, n_estimators=300, threads=2, early_stopping=None)
    model.fit(prep.split.X_train, prep.split.y_train, verbose=False)
    meta = {
        "model_name": s.model_name,
        "task": prep.task.name,
        "dataset": contract.name,
        "target": contract.target.name,
        "contract_fingerprint": contract.fingerprint(),
        "features": contract.feature_names,
        "test_metrics": {},
        "run_id": "benchpeers",
    }
    bundle_dir = write_bundle(folder / "bundle", prep.encoder, model, 0.5, meta, export_onnx(model, prep.encoder.width))
    bundle = Bundle.load(bundle_dir, prefer_onnx=False, threads=1)

    def encode(records: list[dict]) -> np.ndarray:
        return bundle.encoder.transform_records([validate_record(r, contract).values for r in records])

    batch = real_records(BATCH_ROWS, seed=1)
    check = [EXAMPLE, *real_records(4, seed=2)]
    xb, xc = encode(batch), encode(check)
    return Model(
        bundle_dir=bundle_dir,
        booster_file=bundle_dir / "booster.json",
        single_record=EXAMPLE,
        batch_records=batch,
        check_records=check,
        encoded_single=encode([EXAMPLE])[0].tolist(),
        encoded_batch=xb.tolist(),
        encoded_check=xc.tolist(),
        expected_batch=bundle.booster.inplace_predict(xb).tolist(),
        expected_check=bundle.booster.inplace_predict(xc).tolist(),
        info={
            "data": str(DATA.name) if real else "synthetic generator (churnops.synthetic), the real file was absent",
            "n_trees": 300,
            "params": params,
            "width": int(bundle.encoder.width),
            "test_auc_roc": round(auc(prep.split.y_test, bundle.booster.inplace_predict(prep.split.X_test)), 4),
        },
    )


# ---- HTTP helpers ----------------------------------------------------------------------------------------


def post_json(url: str, body: object, timeout: float = 30) -> object:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (loopback)
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:  # say what the server answered
        raise RuntimeError(f"{url} answered {exc.code}: {exc.read()[:600]!r}") from exc


def max_abs_diff(got: list[float], expected: list[float]) -> float:
    """Largest |got - expected|; infinite when the lengths differ."""
    if len(got) != len(expected):
        return float("inf")
    return max((abs(float(a) - float(b)) for a, b in zip(got, expected, strict=True)), default=0.0)


# ---- the servers -----------------------------------------------------------------------------------------


@dataclass
class Target:
    """How to load one server: URLs and bodies for one row and for the batch, and how to read probabilities."""

    name: str
    config: dict
    single_url: str
    single_body: object
    batch_url: str
    batch_body: object
    probabilities: Callable[[str, object], list[float]]  # (url, body) -> the answer's probabilities
    check_bodies: list  # one single-row body per `Model.check_records` row


def ours_target(port: int, model: Model) -> Target:
    base = f"http://127.0.0.1:{port}"

    def probs(url: str, body: object) -> list[float]:
        out = post_json(url, body)
        items = out if isinstance(out, list) else out.get("predictions", out.get("results", [out]))
        return [float(x["probability"]) for x in items]

    return Target(
        name="ours",
        config={
            "server": "the embedded stack's API command (ops.services.api_argv)",
            "workers": WORKERS,
            "input": "raw customer records (validated, encoded, logged)",
        },
        single_url=f"{base}/predict",
        single_body=model.single_record,
        batch_url=f"{base}/predict/batch",
        batch_body=model.batch_records,
        probabilities=probs,
        check_bodies=model.check_records,
    )


def start_ours(model: Model, folder: Path, port: int):
    """Our API, started exactly as the embedded stack starts it (whatever server that is)."""
    from churnops.settings import QUIET_ENV, Settings
    from ops import services

    env = {
        "ENV_FILE": str(folder / "no-env-file"),
        "MODEL_URI": str(model.bundle_dir),
        "STATE_DIR": str(folder / "state"),
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "prom"),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "API_WORKERS": str(WORKERS),
        "BATCH_ROW_LIMIT": str(BATCH_ROWS),
        **QUIET_ENV,
    }
    s = Settings(
        _env_file=None,
        model_uri=env["MODEL_URI"],
        state_dir=Path(env["STATE_DIR"]),
        api_host="127.0.0.1",
        api_port=port,
        api_workers=WORKERS,
        batch_row_limit=BATCH_ROWS,
    )
    argv = services.api_argv(s)
    srv = Server(argv, folder / "ours.log", env=env, cwd=ROOT)  # MODEL_URI wins over any RUN_ID
    return srv, f"http://127.0.0.1:{port}/ready", argv


def bentoml_target(port: int, model: Model, batching: bool) -> Target:
    base = f"http://127.0.0.1:{port}"
    return Target(
        name=f"bentoml_batching_{'on' if batching else 'off'}",
        config={
            "server": "bentoml serve (bench/peers/bentoml_service.py)",
            "workers": WORKERS,
            "threads_per_worker": "OMP_NUM_THREADS=1 (XGBoost), as ours (ONNX, 1 thread)",
            "adaptive_batching": batching,
            "max_batch_size_rows": 2048 if batching else None,
            "access_log": False,
            "input": "encoded float rows as JSON (missing values as NaN tokens, which its parser accepts)",
        },
        single_url=f"{base}/predict",
        single_body={"rows": [model.encoded_single]},
        batch_url=f"{base}/predict",
        batch_body={"rows": model.encoded_batch},
        probabilities=lambda url, body: [float(x) for x in post_json(url, body)],
        check_bodies=[{"rows": [r]} for r in model.encoded_check],
    )


def start_bentoml(model: Model, folder: Path, port: int, batching: bool):
    d = venv_dir("bentoml")
    env = os.environ | {
        "PEER_MODEL": str(model.booster_file),
        "PEER_BATCHING": "1" if batching else "0",
        "PEER_WORKERS": str(WORKERS),
        "BENTOML_HOME": str(folder / "bentoml-home"),
        "BENTOML_DO_NOT_TRACK": "True",
        "OMP_NUM_THREADS": "1",
    }
    argv = [str(d / "bin" / "bentoml"), "serve", "bentoml_service:Churn", "--host", "127.0.0.1", "--port", str(port)]
    log = folder / f"bentoml-{'on' if batching else 'off'}.log"
    return Server(argv, log, env=env, cwd=BENCH / "peers"), f"http://127.0.0.1:{port}/readyz", argv


MLSERVER_BATCHING = {"max_batch_size": 64, "max_batch_time": 0.002}


def mlserver_infer_body(rows: list[list[float]]) -> dict:
    """Open Inference Protocol request: one FP32 tensor, the runtime's `predict` output asked for.

    mlserver-xgboost loads a booster file as an `XGBRegressor` first (it succeeds for a
    `binary:logistic` booster too), so `predict` answers the positive-class probability and
    `predict_proba` is refused.
    """
    width = len(rows[0]) if rows else 0
    data = [None if v != v else v for r in rows for v in r]  # JSON has no NaN: a missing value is null
    return {
        "inputs": [{"name": "predict", "shape": [len(rows), width], "datatype": "FP32", "data": data}],
        "outputs": [{"name": "predict"}],
    }


def mlserver_probabilities(response: dict) -> list[float]:
    """Positive-class probabilities from an OIP response: its `predict` output ([n] or [n, 1]), or
    column 1 of a `predict_proba` output ([n, 2])."""
    out = next(o for o in response["outputs"] if o["name"] in ("predict", "predict_proba"))
    data, shape = out["data"], out["shape"]
    if len(shape) == 2 and shape[1] == 2:
        return [float(x) for x in data[1::2]]
    return [float(x) for x in data]


def mlserver_target(port: int, model: Model, batching: bool) -> Target:
    url = f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/infer"
    return Target(
        name=f"mlserver_batching_{'on' if batching else 'off'}",
        config={
            "server": "mlserver start (mlserver_xgboost.XGBoostModel)",
            "parallel_workers": WORKERS,
            "debug": False,
            "threads_per_worker": "OMP_NUM_THREADS=1 (XGBoost), as ours (ONNX, 1 thread)",
            "adaptive_batching": batching,
            **(MLSERVER_BATCHING if batching else {}),
            "input": "encoded FP32 tensor (Open Inference Protocol)",
        },
        single_url=url,
        single_body=mlserver_infer_body([model.encoded_single]),
        batch_url=url,
        batch_body=mlserver_infer_body(model.encoded_batch),
        probabilities=lambda u, body: mlserver_probabilities(post_json(u, body)),
        check_bodies=[mlserver_infer_body([r]) for r in model.encoded_check],
    )


def start_mlserver(model: Model, folder: Path, port: int, batching: bool):
    d = folder / f"mlserver-{'on' if batching else 'off'}"
    mdir = d / MODEL_NAME
    mdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(model.booster_file, mdir / "model.json")
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": WORKERS,
        "debug": False,  # production: no uvicorn access log line per request (debug defaults to true)
    }
    (d / "settings.json").write_text(json.dumps(settings))
    ms = {
        "name": MODEL_NAME,
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": "./model.json", "version": "v1"},
        **(MLSERVER_BATCHING if batching else {}),
    }
    (mdir / "model-settings.json").write_text(json.dumps(ms))
    argv = [str(venv_dir("mlserver") / "bin" / "mlserver"), "start", str(d)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    srv = Server(argv, folder / f"mlserver-{'on' if batching else 'off'}.log", env=env, cwd=d)
    return srv, f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/ready", argv


# ---- load (wrk) ------------------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open([==[%s]==], "rb"))
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %%d, "errors": %%d, "status_errors": %%d, "duration_us": %%d, '
    .. '"p50": %%d, "p99": %%d, "mean": %%f}\\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout, e.status, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def wrk_script(body_file: Path) -> str:
    """The wrk Lua script that POSTs the JSON in `body_file` and prints one WRKJSON line when done."""
    return WRK_SCRIPT % str(body_file)


def parse_wrk(stdout: str, rows_per_request: int, concurrency: int) -> dict:
    """One load cell from wrk's output (the WRKJSON line our script prints): successful requests per
    second, p50/p99 in ms, rows/s, errors (connection errors plus non-2xx answers)."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise ValueError(f"no WRKJSON line in wrk's output: {stdout[-500:]!r}")
    r = json.loads(line[len("WRKJSON ") :])
    wall = r["duration_us"] / 1e6
    ok = max(0, r["requests"] - r["errors"])
    rate = ok / wall if wall > 0 else 0.0
    return {
        "concurrency": concurrency,
        "rows_per_request": rows_per_request,
        "requests": ok,
        "errors": r["errors"],
        "seconds": round(wall, 2),
        "req_per_s": round(rate, 1),
        "rows_per_s": round(rate * rows_per_request, 1),
        "p50_ms": round(r["p50"] / 1000, 3),
        "p99_ms": round(r["p99"] / 1000, 3),
        "mean_ms": round(r["mean"] / 1000, 3),
    }


def server_cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a server's whole process tree (master, workers, helpers)."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            c = p.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


def wrk(
    url: str, body: object, concurrency: int, seconds: float, rows: int, folder: Path, pid: int | None = None
) -> dict:
    """wrk -t1 against `url` for `seconds` (after a 1 s warm-up), POSTing `body` as JSON; with the
    server's `pid`, also its CPU time per request (steadier than rates on a shared machine)."""
    body_file = folder / "wrk-body.json"
    body_file.write_text(json.dumps(body))
    script = folder / "wrk.lua"
    script.write_text(wrk_script(body_file))
    result = {}
    for secs in (1, seconds):  # warm-up, then the measured run
        cpu0 = server_cpu_seconds(pid)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, int(secs))}s", "-s", str(script), url],
            capture_output=True,
            text=True,
            timeout=secs + 60,
        )
        result = parse_wrk(out.stdout, rows, concurrency)
        if pid is not None and result["requests"]:
            result["server_cpu_us_per_request"] = round((server_cpu_seconds(pid) - cpu0) / result["requests"] * 1e6)
    return result


# ---- one server, all cells -------------------------------------------------------------------------------


def check_parity(t: Target, model: Model) -> dict:
    """The server's probabilities against the booster's on 1,000 rows (one request) and 5 single rows."""
    got_batch = t.probabilities(t.batch_url, t.batch_body)
    got_single = [t.probabilities(t.single_url, body)[0] for body in t.check_bodies]
    diff = max(max_abs_diff(got_batch, model.expected_batch), max_abs_diff(got_single, model.expected_check))
    return {"rows_checked": len(got_batch) + len(got_single), "max_abs_diff": diff, "ok": diff <= TOLERANCE}


def measure(t: Target, folder: Path, seconds: float, pid: int | None = None) -> dict:
    single = [wrk(t.single_url, t.single_body, c, seconds, 1, folder, pid) for c in CONCURRENCIES]
    for r in single:
        print(
            f"  {t.name:<22} c={r['concurrency']:<3} {r['req_per_s']:>8.0f} req/s p99 {r['p99_ms']:.1f} ms", flush=True
        )
    batch = wrk(t.batch_url, t.batch_body, BATCH_CONCURRENCY, seconds, BATCH_ROWS, folder, pid)
    print(f"  {t.name:<22} batch {batch['rows_per_s']:>10,.0f} rows/s p99 {batch['p99_ms']:.1f} ms", flush=True)
    return {"single": single, "batch": batch}


def wait_ok(url: str, timeout: float, srv: Server) -> None:
    """Poll `url` until it answers 200 (a 4xx/503 means not ready yet); raise with the log tail if the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise RuntimeError(f"server exited with {srv.proc.returncode}: {Path(srv.log).read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback)
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout} s: {Path(srv.log).read_text()[-3000:]}")


def run_server(name: str, start, target: Target, model: Model, folder: Path, seconds: float) -> dict:
    """Start a server, wait until ready, check its probabilities, measure, stop it."""
    srv, ready_url, argv = start()
    try:
        wait_ok(ready_url, 300, srv)
        time.sleep(1.0)
        parity = check_parity(target, model)
        print(f"{name}: parity {parity}", flush=True)
        out = {"config": target.config, "command": [Path(argv[0]).name, *argv[1:]], "parity": parity}
        if not parity["ok"]:
            return out | {"error": f"probabilities differ from the booster's by {parity['max_abs_diff']:.2e}"}
        return out | measure(target, folder, seconds, srv.proc.pid)
    finally:
        srv.stop()


# ---- ratios and the table --------------------------------------------------------------------------------


def ratios(servers: dict) -> dict:
    """Ours over each peer: req/s at each concurrency and batch rows/s (above 1: ours is ahead),
    plus the peer's p99 over ours at each concurrency and, where measured, the peer's server CPU
    per request over ours at c=16 and for the batch (above 1: ours spends less)."""
    ours = servers.get("ours") or {}
    if "single" not in ours:
        return {}
    mine = {r["concurrency"]: r for r in ours["single"]}
    out = {}
    for name, peer in servers.items():
        if name == "ours" or "single" not in peer:
            continue
        theirs = {r["concurrency"]: r for r in peer["single"]}
        row = {}
        for c in CONCURRENCIES:
            if c in mine and c in theirs and theirs[c]["req_per_s"] > 0:
                row[f"req_per_s_c{c}"] = round(mine[c]["req_per_s"] / theirs[c]["req_per_s"], 2)
                row[f"p99_c{c}_peer_over_ours"] = round(theirs[c]["p99_ms"] / max(mine[c]["p99_ms"], 1e-9), 2)
        if peer["batch"]["rows_per_s"] > 0:
            row["batch_rows_per_s"] = round(ours["batch"]["rows_per_s"] / peer["batch"]["rows_per_s"], 2)
        for key, a, b in (("c16", mine.get(16, {}), theirs.get(16, {})), ("batch", ours["batch"], peer["batch"])):
            if a.get("server_cpu_us_per_request") and b.get("server_cpu_us_per_request"):
                row[f"server_cpu_{key}_peer_over_ours"] = round(
                    b["server_cpu_us_per_request"] / a["server_cpu_us_per_request"], 2
                )
        out[name] = row
    return out


def ahead_everywhere(rat: dict) -> dict[str, bool]:
    """Per concurrency (and the batch): is ours ahead of every peer that ran?"""
    keys = [f"req_per_s_c{c}" for c in CONCURRENCIES] + ["batch_rows_per_s"]
    return {k: bool(rat) and all(r.get(k, 0) > 1 for r in rat.values()) for k in keys}


def print_table(result: dict) -> None:
    print(f"\npeers side by side ({result['note']})")
    heads = "".join(f"{'c=' + str(c) + ' req/s':>13}{'p50/p99 ms':>14}" for c in CONCURRENCIES)
    print(f"  {'server':<22}{heads}{'batch rows/s':>14}{'CPU us/req c=16':>17}{'CPU us/row batch':>18}")
    for name, s in result["servers"].items():
        if "single" not in s:
            print(f"  {name:<22}  not measured: {s.get('error', '?')}")
            continue
        cells = "".join(
            f"{r['req_per_s']:>13,.0f}{r['p50_ms']:>7.1f}/{r['p99_ms']:<6.1f}" for r in s["single"]
        )  # fmt: skip
        c16 = next((r for r in s["single"] if r["concurrency"] == 16), {})
        cpu16 = c16.get("server_cpu_us_per_request", float("nan"))
        cpu_row = s["batch"].get("server_cpu_us_per_request", float("nan")) / BATCH_ROWS
        print(f"  {name:<22}{cells}{s['batch']['rows_per_s']:>14,.0f}{cpu16:>17,.0f}{cpu_row:>18.1f}")
    for name, r in result["ratios"].items():
        print(f"  ours / {name:<22} {r}")
    print(f"  ours ahead of every peer: {result['ours_ahead_of_every_peer']}")


# ---- main ------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--install-only", action="store_true", help="create the peers' virtualenvs and stop")
    ap.add_argument("--seconds", type=float, default=SECONDS, help="seconds per load cell (default 10)")
    ap.add_argument("--note", default=os.environ.get("BENCH_NOTE", ""), help="free text kept in the result")
    args = ap.parse_args()
    import xgboost

    from churnops.settings import quiet_process

    quiet_process()
    venvs: dict = {}
    for peer, reqs in peer_requirements(xgboost.__version__).items():
        try:
            venvs[peer] = ensure_venv(peer, reqs)
        except subprocess.CalledProcessError as exc:
            venvs[peer] = {"error": f"install failed: {exc}"}
        print(f"{peer}: {venvs[peer]}", flush=True)
    if args.install_only:
        return
    if not shutil.which("wrk"):
        sys.exit("bench-peers needs wrk (`make system-deps`)")
    folder = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    model = build_model(folder)
    print(f"model: {model.info}", flush=True)

    plans = [("ours", lambda p: lambda: start_ours(model, folder, p), lambda p: ours_target(p, model))]
    for b in (True, False):
        plans.append(
            (
                f"bentoml_batching_{'on' if b else 'off'}",
                lambda p, b=b: lambda: start_bentoml(model, folder, p, b),
                lambda p, b=b: bentoml_target(p, model, b),
            )
        )
        plans.append(
            (
                f"mlserver_batching_{'on' if b else 'off'}",
                lambda p, b=b: lambda: start_mlserver(model, folder, p, b),
                lambda p, b=b: mlserver_target(p, model, b),
            )
        )
    servers: dict = {}
    for name, start, target in plans:
        peer = name.split("_")[0]
        if peer in venvs and "error" in venvs[peer]:
            servers[name] = {"error": venvs[peer]["error"]}
            continue
        port = free_port()
        try:
            servers[name] = run_server(name, start(port), target(port), model, folder, args.seconds)
        except Exception as exc:  # a peer that cannot be made to work is reported, not fatal
            servers[name] = {"error": f"{type(exc).__name__}: {str(exc)[-1500:]}"}
            print(f"{name}: FAILED {servers[name]['error']}", flush=True)
    rat = ratios(servers)
    result = {
        "note": args.note or "measured on a quiet machine",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "load_generator": "wrk -t1"},
        "seconds_per_cell": args.seconds,
        "tolerance": TOLERANCE,
        "model": model.info,
        "venvs": venvs,
        "servers": servers,
        "ratios": rat,
        "ours_ahead_of_every_peer": ahead_everywhere(rat),
    }
    sys.path.insert(0, str(BENCH))
    from table import save

    print(f"wrote {save('peers', result)}")
    print_table(result)


if __name__ == "__main__":
    main()
