"""The one benchmark table is read from the result files, not written by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_table():
    spec = importlib.util.spec_from_file_location("bench_table", ROOT / "bench" / "table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rows_come_from_the_result_files_and_missing_benches_say_so(tmp_path, monkeypatch):
    t = load_table()
    monkeypatch.setattr(t, "RESULTS", tmp_path)
    t.save(
        "loop",
        {
            "realized_auc": {"before_drift": 0.91, "after_drift": 0.61, "after_loop": 0.86},
            "n_trials": 3,
            "recovered_share_of_lost_auc": 0.8333,
            "seconds": {"trigger_to_serving": 12.34},
            "retrained": {"outcome": "promoted"},
        },
    )
    saved = json.loads((tmp_path / "loop.json").read_text())
    assert saved["measured_at"].endswith("UTC") and saved["commit"]
    text = t.table()
    assert "| 0.910 / 0.610 / 0.860 (83% of the loss recovered) |" in text
    assert "| 12.3 (3 trials; retrained model promoted) |" in text
    assert "| `make bench-serve` | not run on this commit | — | — |" in text


def test_page_block_is_replaced_between_the_markers_only(tmp_path):
    t = load_table()
    page = tmp_path / "benchmarks.md"
    page.write_text(f"before\n{t.BEGIN}\nold table\n{t.END}\nafter\n")
    t.write_page(page, t.BEGIN, t.END, "| new |")
    assert page.read_text() == f"before\n{t.BEGIN}\n| new |\n{t.END}\nafter\n"


def test_the_docs_tables_are_the_generated_ones():
    """The bench table lives in docs/benchmarks.md, where each ran in docs/verification.md, the
    footprint table in docs/development.md; the README links to the first and holds none of them."""
    t = load_table()
    bench = t.BENCH_PAGE.read_text()
    assert bench.split(t.BEGIN, 1)[1].split(t.END, 1)[0].strip() == t.table().strip()
    where = t.VERIFY_PAGE.read_text()
    assert where.split(t.WHERE_BEGIN, 1)[1].split(t.WHERE_END, 1)[0].strip() == t.measured_where().strip()
    dev = t.FOOTPRINT_PAGE.read_text()
    assert dev.split(t.FP_BEGIN, 1)[1].split(t.FP_END, 1)[0].strip() == t.footprint_table().strip()
    readme = (ROOT / "README.md").read_text()
    assert t.BEGIN not in readme and t.FP_BEGIN not in readme
    assert "docs/benchmarks.md#the-table" in readme


def test_servers_rows_name_the_chosen_server_and_every_failed_fault(tmp_path, monkeypatch):
    t = load_table()
    monkeypatch.setattr(t, "RESULTS", tmp_path)
    ok = {"passed": True}
    t.save(
        "servers",
        {
            "rounds": [{}, {}, {}],
            "faults": {
                "granian": {"slow_reader": ok, "fake_end_chunked": ok, "passed_all": True},
                "gthread": {"slow_reader": {"passed": False}, "fake_end_chunked": ok, "passed_all": False},
            },
            "ceiling": [{"server": "granian", "req_per_s": 40000.0}, {"server": "gthread", "req_per_s": 9000.0}],
            "decision": {
                "c16_median_req_per_s": {"granian": 8100.4, "gthread": 4000.0, "keepalive": 5000.0},
                "winner": "granian",
                "winner_over_keepalive_c16": 1.62,
                "predict_c16_over_hello_ceiling": 0.2,
            },
        },
    )
    text = t.table()
    assert "median of 3 rounds (req/s): granian / gthread / keepalive | 8,100 / 4,000 / 5,000; chosen: granian" in text
    assert "(×1.62 the former keep-alive worker)" in text
    assert "| granian 2/2; gthread 1/2 (failed: slow_reader) |" in text
    assert "hello-world WSGI ceiling on granian, c=16 (req/s); `/predict` share of it | 40,000; 0.20 |" in text


def test_later_fault_scenarios_have_rows_and_a_failed_one_says_so(tmp_path, monkeypatch):
    t = load_table()
    monkeypatch.setattr(t, "RESULTS", tmp_path)
    note = "run alone (BENCH_FAULTS_ONLY) at 2026-12-01 10:00 UTC (commit abc1234); the others earlier"
    t.save(
        "faults",
        {
            "store_auth_failure": {
                "auth_failure_seconds": 10.0,
                "answered_200": 900,
                "answered_200_during_failure": 700,
                "lost": 0,
                "quarantined": 0,
                "spooled": 650,
                "store_calls_during_failure": 4,
                "note": note,
            },
            "spool_full_stream": {
                "records": 2000,
                "store_locked_seconds": 45.0,
                "spool_max_bytes": 20000,
                "emitted_not_logged_max_during": 0,
                "emitted_not_logged_at_end": 0,
                "results_unique": 1999,
                "without_result": 1,
            },
            "client_faults": {"granian": {"slow_reader": {"passed": True}, "passed_all": True}},
            "concurrent_reloads": {
                "rounds": 5,
                "reloads_per_round": 4,
                "rounds_with_workers_on_different_models": 1,
                "answers": {"202": 12, "409": 8},
                "seconds_until_workers_agree": [0.5, 61.2],
            },
            "consumers_lease": {"error": "moto refused the reshard"},
        },
    )
    text = t.table()
    assert "0 lost of 900 answered (700 during it), 0 quarantined, 650 spooled; 4 store calls while failing" in text
    assert "(run alone, 2026-12-01 10:00 UTC, abc1234)" in text
    assert "1,999 unique results for 2,000 records (1 without)" in text
    assert "| misbehaving clients per server candidate (bench-faults) | granian 1/1 |" in text
    assert '1 rounds ending with workers on different models; answers {"202": 12, "409": 8}' in text
    assert "workers agreed within 61.2 s" in text
    assert "| not measured: moto refused the reshard |" in text


def test_estimated_performance_and_the_nannyml_comparison_have_rows(tmp_path, monkeypatch):
    t = load_table()
    monkeypatch.setattr(t, "RESULTS", tmp_path)
    t.save(
        "loop-estimated",
        {"n_trials": 2, "estimated_performance": {"covariate_max_abs_error": 0.0061, "concept_mean_abs_error": 0.4833}},
    )
    t.save(
        "cbpe-nannyml",
        {
            "rows_per_window": 5000,
            "nannyml_version": "0.13.1",
            "covariate_mean_abs_error": {"ours": 0.00243, "nannyml": 0.00242},
            "mean_abs_ours_minus_nannyml": 3.9e-05,
        },
    )
    text = t.table()
    assert "| 0.006 / 0.483 (2-trial model) | ≤ 0.02 / — (cannot) |" in text
    assert "ours / NannyML 0.13.1; mean abs. ours − NannyML | 0.0024 / 0.0024; 3.9e-05 |" in text


def test_measured_where_names_each_results_machine(tmp_path, monkeypatch):
    t = load_table()
    monkeypatch.setattr(t, "RESULTS", tmp_path)
    t.save("train", {"machine": {"cores": 2, "python": "3.11.7", "note": "shared cores"}})
    t.save("image_gpu", {"gpu_machine": {"machine": {"gpu": "NVIDIA H200"}}})
    text = t.measured_where()
    assert "| `make bench-train` |" in text and "| 2 cores; Python 3.11.7; shared cores |" in text
    assert "| GPU half on a lent machine: NVIDIA H200 |" in text
    assert "| `make bench-serve` | not run on this commit | — |" in text
