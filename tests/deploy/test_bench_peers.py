"""bench/bench_peers.py's own parts: wrk output, the Open Inference Protocol bodies, ratios, the table.

The peers themselves (BentoML, MLServer) are not installed here: `make bench-peers` does that.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bp():
    return load("bench_peers")


WRK_OUT = """Running 5s test @ http://127.0.0.1:1234/predict
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms    1.02ms  20.00ms   90.00%
WRKJSON {"requests": 10010, "errors": 10, "status_errors": 10, "duration_us": 5000000, "p50": 2500, "p99": 12750, "mean": 3125.0}
"""


def test_wrk_cell_counts_only_answered_requests_and_converts_units(bp):
    r = bp.parse_wrk(WRK_OUT, rows_per_request=1000, concurrency=16)
    assert r["requests"] == 10_000 and r["errors"] == 10
    assert r["req_per_s"] == 2000.0  # (10,010 - 10) / 5 s
    assert r["rows_per_s"] == 2_000_000.0
    assert (r["p50_ms"], r["p99_ms"], r["mean_ms"]) == (2.5, 12.75, 3.125)
    assert r["concurrency"] == 16 and r["seconds"] == 5.0


def test_wrk_output_without_the_summary_line_is_an_error(bp):
    with pytest.raises(ValueError, match="no WRKJSON"):
        bp.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n", 1, 1)


def test_open_inference_body_is_one_flat_fp32_tensor_and_the_probability_is_read_back(bp):
    body = bp.mlserver_infer_body([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    (tensor,) = body["inputs"]
    assert tensor["shape"] == [2, 3] and tensor["datatype"] == "FP32"
    assert tensor["data"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert body["outputs"] == [{"name": "predict"}]
    answer = {"outputs": [{"name": "predict", "shape": [2, 1], "data": [0.1, 0.75]}]}
    assert bp.mlserver_probabilities(answer) == [0.1, 0.75]
    answer = {"outputs": [{"name": "predict_proba", "shape": [2, 2], "data": [0.9, 0.1, 0.25, 0.75]}]}
    assert bp.mlserver_probabilities(answer) == [0.1, 0.75]  # the positive class's column


def test_max_abs_diff_flags_a_missing_row(bp):
    assert bp.max_abs_diff([0.5, 0.25], [0.5, 0.2500001]) == pytest.approx(1e-7)
    assert bp.max_abs_diff([0.5], [0.5, 0.25]) == float("inf")


def cell(c: int, rate: float, p99: float, cpu: float | None = None) -> dict:
    out = {"concurrency": c, "req_per_s": rate, "p50_ms": p99 / 2, "p99_ms": p99, "rows_per_s": rate}
    return out | ({} if cpu is None else {"server_cpu_us_per_request": cpu})


def servers() -> dict:
    return {
        "ours": {
            "single": [cell(1, 1000, 2.0), cell(16, 4000, 8.0, cpu=400), cell(64, 4000, 30.0)],
            "batch": {"rows_per_s": 300_000, "p99_ms": 20.0},
        },
        "bentoml_batching_on": {
            "single": [cell(1, 500, 4.0), cell(16, 2000, 16.0, cpu=1000), cell(64, 5000, 15.0)],
            "batch": {"rows_per_s": 100_000, "p99_ms": 50.0},
        },
        "mlserver_batching_off": {"error": "RuntimeError: server exited with 1"},
    }


def test_ratios_are_ours_over_each_peer_and_ahead_means_ahead_of_every_peer(bp):
    rat = bp.ratios(servers())
    assert set(rat) == {"bentoml_batching_on"}  # a peer that failed has no ratio
    r = rat["bentoml_batching_on"]
    assert (r["req_per_s_c1"], r["req_per_s_c16"], r["req_per_s_c64"]) == (2.0, 2.0, 0.8)
    assert r["p99_c16_peer_over_ours"] == 2.0 and r["batch_rows_per_s"] == 3.0
    assert r["server_cpu_c16_peer_over_ours"] == 2.5 and "server_cpu_batch_peer_over_ours" not in r
    assert bp.ahead_everywhere(rat) == {
        "req_per_s_c1": True,
        "req_per_s_c16": True,
        "req_per_s_c64": False,
        "batch_rows_per_s": True,
    }
    assert not any(bp.ahead_everywhere({}).values())  # no peer measured: nothing to claim


def test_table_shows_each_server_and_a_peer_that_could_not_run(bp, tmp_path, monkeypatch):
    table = load("table")
    monkeypatch.setattr(table, "RESULTS", tmp_path)
    rat = bp.ratios(servers())
    table.save(
        "peers",
        {
            "note": "under load",
            "servers": servers(),
            "ratios": rat,
            "ours_ahead_of_every_peer": bp.ahead_everywhere(rat),
        },
    )
    text = table.table()
    assert "| `make bench-peers` (" in text
    assert "4,000 (p99 8.0 ms)" in text and "ours ×2.00 at c=16" in text
    assert "mlserver_batching_off" in text and "not measured: RuntimeError" in text
    assert "yes / yes / no / yes (under load)" in text


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (make system-deps)")
def test_wrk_script_posts_the_body_file_and_reports_a_cell(bp, tmp_path):
    seen: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if len(seen) < 3:
                seen.append(body)
            self.send_response(200 if self.headers["Content-Type"] == "application/json" else 415)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        body = {"rows": [[1.5, "Unknown", 'quote" ]] ]==]']]}  # survives any Lua quoting
        r = bp.wrk(f"http://127.0.0.1:{srv.server_port}/predict", body, 1, 1, 1, tmp_path)
    finally:
        srv.shutdown()
    assert json.loads(seen[0]) == body
    assert r["requests"] > 0 and r["errors"] == 0 and r["concurrency"] == 1
    assert r["rows_per_s"] == r["req_per_s"]
