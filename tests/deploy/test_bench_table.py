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


def test_readme_block_is_replaced_between_the_markers_only(tmp_path):
    t = load_table()
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{t.BEGIN}\nold table\n{t.END}\nafter\n")
    t.write_readme("| new |", readme)
    assert readme.read_text() == f"before\n{t.BEGIN}\n| new |\n{t.END}\nafter\n"


def test_the_readme_table_is_the_generated_one():
    t = load_table()
    body = (ROOT / "README.md").read_text()
    assert body.split(t.BEGIN, 1)[1].split(t.END, 1)[0].strip() == t.table().strip()
    assert body.split(t.FP_BEGIN, 1)[1].split(t.FP_END, 1)[0].strip() == t.footprint_table().strip()
