"""How big the project is and how many of its files one operation crosses.

    python bench/footprint.py [--label before]   -> bench/results/footprint.json (one entry per label)

Lines of code per package (non-blank lines that are not comments), and the project's own files
whose functions run during: one `POST /predict` (Flask test client, in process, after a warm-up
request; the gunicorn worker is not part of it), one stream record (the consumer on a real moto
Kinesis stream), one training run (the real flow, 2 trials, on the real file) and one report
(`build_report` over 300 logged predictions). Files are found with a profiler hook on every
thread, so helpers called from the prediction log's writer thread count too. Read from the source
(bench/codeshape.py): import cycles, imports against the layers, imports inside functions, the
largest function.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from codeshape import LAYERS, measure

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "bank_churners.csv"
OUT = ROOT / "bench" / "results" / "footprint.json"
PACKAGES = ("churnops", "serving", "reporting", "flows", "simulators", "ops", "bench", "tests")


def lines_of_code() -> dict:
    """Per package: Python files and non-blank, non-comment lines."""
    out = {}
    for pkg in PACKAGES:
        files = sorted((ROOT / pkg).rglob("*.py"))
        loc = 0
        for f in files:
            loc += sum(1 for ln in f.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#"))
        out[pkg] = {"files": len(files), "loc": loc}
    out["product (all but bench, tests)"] = {
        k: sum(out[p][k] for p in PACKAGES if p not in ("bench", "tests")) for k in ("files", "loc")
    }
    return out


def layer_rank(path: str) -> int:
    """A project file's layer, 0 the highest (bench/codeshape.py LAYERS)."""
    top = path.split(os.sep)[0]
    return next(rank for rank, layer in enumerate(LAYERS) if top in layer)


class Recorder:
    """Project files whose functions are called while `record()` is active, on every thread, and
    the calls that go up the layers (a lower layer's function calling a higher layer's: a callback).

    The hook is installed once, before any server thread exists (a profile hook reaches only the
    threads started after it), and records only inside `record()`.
    """

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.main_files: set[str] = set()  # called on the main thread (the request's, in the test client)
        self.upward: set[str] = set()
        self.active = False
        self.root = str(ROOT) + os.sep
        self.skip = (str(ROOT / ".venv"), str(ROOT / "bench"))
        self.thread = threading.main_thread()

    def project_file(self, frame) -> str | None:
        f = frame.f_code.co_filename if frame is not None else ""
        return os.path.relpath(f, ROOT) if f.startswith(self.root) and not f.startswith(self.skip) else None

    def _hook(self, frame, event, arg):
        if self.active and event == "call":
            here = self.project_file(frame)
            if here is None:
                return
            self.files.add(here)
            if threading.current_thread() is self.thread:
                self.main_files.add(here)
            caller = self.project_file(frame.f_back)
            if caller is not None and layer_rank(caller) > layer_rank(here):
                self.upward.add(f"{caller} -> {here}::{frame.f_code.co_name}")

    def install(self) -> None:
        threading.setprofile(self._hook)
        sys.setprofile(self._hook)

    @contextmanager
    def record(self, into: dict, name: str):
        self.files, self.main_files, self.upward, self.active = set(), set(), set(), True
        try:
            yield
        finally:
            self.active = False
            into[name] = {
                "files": len(self.files),
                "list": sorted(self.files),
                "only on other threads (the log writer, background work)": sorted(self.files - self.main_files),
                "calls up the layers": sorted(self.upward),
            }


REC = Recorder()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", default="now")
    a = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"footprint needs the real data file at {DATA}")
    REC.install()
    tmp = Path(tempfile.mkdtemp(prefix="footprint-"))
    os.environ.update(
        {
            "ENV_FILE": str(tmp / "none"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "STATE_DIR": str(tmp / "state"),
            "AUTO_APPROVE": "true",
            "LOG_FLUSH_INTERVAL_S": "0.05",
        }
    )
    from ops.localservers import start_mlflow, start_moto

    (tmp / "moto").mkdir(), (tmp / "mlflow").mkdir()
    moto, moto_url = start_moto(tmp / "moto")
    mlf, mlflow_url = start_mlflow(tmp / "mlflow")
    os.environ.update({"AWS_ENDPOINT_URL": moto_url, "MLFLOW_TRACKING_URI": mlflow_url})
    out: dict = {"loc": lines_of_code(), "crossed": {}} | measure()
    try:
        from prefect.testing.utilities import prefect_test_harness

        from churnops.aws import ensure_bucket, ensure_streams
        from churnops.contract import load_contract
        from churnops.settings import get_settings

        get_settings.cache_clear()
        s = get_settings()
        ensure_bucket(s), ensure_streams(s)
        contract = load_contract(s.dataset)
        example = dict(contract.example)
        with prefect_test_harness(server_startup_timeout=120):
            from flows.train_flow import train_flow

            with REC.record(out["crossed"], "one training run (2 trials)"):
                trained = train_flow(n_trials=2, data=str(DATA), data_profile=False)
        os.environ["RUN_ID"] = trained["run_id"]
        get_settings.cache_clear()
        s = get_settings()

        from serving.app import create_app

        app = create_app()
        client = app.test_client()
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        # the bodies are encoded here, not by the test client's json= (its encoder is Flask's, in serving/app.py)
        warm, one = (json.dumps({"request_id": rid, "features": example}).encode() for rid in ("warm", "one"))
        client.post("/predict", data=warm, content_type="application/json")
        time.sleep(0.3)
        with REC.record(out["crossed"], "one POST /predict"):
            r = client.post("/predict", data=one, content_type="application/json")
            time.sleep(0.3)  # the log writer's flush
        assert r.status_code == 200, r.get_json()

        from serving.consumer import Consumer

        consumer = Consumer(s)
        consumer.wait_for_model()
        kin = consumer.kin
        for tag in ("warm", "one"):
            kin.put_record(
                StreamName=s.input_stream,
                Data=json.dumps({"request_id": f"stream-{tag}", "features": example}).encode(),
                PartitionKey=tag,
            )
            with REC.record(out["crossed"], f"one stream record ({tag})"):
                deadline = time.monotonic() + 30
                while consumer.processed < (1 if tag == "warm" else 2) and time.monotonic() < deadline:
                    consumer.poll_once()
                time.sleep(0.3)  # the log writer's flush
        assert consumer.processed == 2, consumer.processed
        out["crossed"]["one stream record"] = out["crossed"].pop("one stream record (one)")
        out["crossed"].pop("one stream record (warm)")

        client.post("/predict/batch", json=[example] * 300)
        time.sleep(1.0)
        from churnops.store.factory import open_store
        from reporting.report import build_report

        store = open_store(s)
        with REC.record(out["crossed"], "one report"):
            build_report(store, s, contract, window_hours=1.0, out_dir=tmp / "reports")
    finally:
        moto.stop(), mlf.stop()
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[a.label] = {"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} | out
    from table import commit

    results[a.label]["commit"] = commit()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    for k, v in out["loc"].items():
        print(f"{k:34s} {v['files']:4d} files {v['loc']:7,d} lines")
    for k, v in out["crossed"].items():
        up = len(v["calls up the layers"])
        print(
            f"{k:34s} crosses {v['files']} project files ({len(v['list']) - len(v['only on other threads (the log writer, background work)'])} on its own thread), {up} calls up the layers"
        )
    for k in ("import cycles", "imports against the layers", "imports inside functions", "largest function"):
        print(f"{k:34s} { ({kk: vv for kk, vv in out[k].items() if kk != 'list'}) }")
    print(f"-> {OUT} [{a.label}]")


if __name__ == "__main__":
    main()
