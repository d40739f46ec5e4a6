"""Report flow end to end: real MLflow server (reference artifacts), real store, real Evidently."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.memory_store import MemoryStore
from tests.support.monitoring import log_window

try:
    from churnops.store.sqlite import SQLiteStore
except ImportError:  # pragma: no cover - the embedded store not there yet
    SQLiteStore = None


@pytest.fixture(scope="module")
def reference_run(mlflow_uri, reference_frame, tmp_path_factory):
    """An MLflow run holding reference_sample.csv + threshold.json, as a training run logs them."""
    from mlflow.tracking import MlflowClient

    d = tmp_path_factory.mktemp("refrun")
    reference_frame.to_csv(d / "reference_sample.csv", index=False)
    (d / "threshold.json").write_text(json.dumps({"threshold": 0.5, "strategy": "max_f1"}))
    c = MlflowClient(tracking_uri=mlflow_uri)
    exp = c.create_experiment(f"monitor-test-{time.time_ns()}")
    run = c.create_run(exp)
    c.log_artifact(run.info.run_id, str(d / "reference_sample.csv"))
    c.log_artifact(run.info.run_id, str(d / "threshold.json"))
    c.set_terminated(run.info.run_id)
    return run.info.run_id


def _stores(tmp_path):
    """The real embedded store when it exists, else the in-memory implementation of the ABC."""
    if SQLiteStore is not None:
        return [("sqlite", SQLiteStore(tmp_path / "predictions.db"))]
    return [("memory", MemoryStore())]


def test_report_end_to_end(tmp_path, settings_factory, contract, reference_run, mlflow_uri):
    from reporting.index import load_summaries
    from reporting.report import build_report

    for name, store in _stores(tmp_path):
        s = settings_factory(
            mlflow_tracking_uri=mlflow_uri, reports_dir=tmp_path / f"reports-{name}", report_max_rows=1000
        )
        t0 = time.time()
        # 1) too few rows: recorded, not failed
        log_window(store, contract, 50, seed=1, end=t0 - 5 * 3600, hours=0.5, run_id=reference_run)
        first = build_report(store, s, contract, window_hours=3, now=t0 - 5 * 3600 + 60)
        assert first["status"] == "insufficient_data"
        assert first["headline"]["message"] == "not enough data (n=50 < min 200)"
        assert "html" not in first["files"]
        # 2) a real window with shift drift: 1500 rows (sampled to 1000 for Evidently), 60 % labelled
        log_window(store, contract, 1500, seed=2, end=t0, hours=2.9, run_id=reference_run, drift=["shift"])
        second = build_report(store, s, contract, window_hours=3, now=t0)
        folder = tmp_path / f"reports-{name}"
        assert second["reference_run_id"] == reference_run
        assert second["n_window"] == 1500 and second["n"] == 1000 and second["sampled"] is True
        assert second["status"] == "drift_critical"
        assert {"total_trans_ct", "total_trans_amt"} <= set(second["drift"]["critical_features"])
        perf = second["performance"]
        assert 800 < perf["n"] < 1000 and 0.5 < perf["overall"]["auc_roc"] <= 1.0
        assert {(g["route"]) for g in perf["by_model"]} == {"champion", "challenger"}
        html = folder / second["files"]["html"]
        assert html.exists() and 100_000 < html.stat().st_size < 10_000_000
        assert (folder / second["files"]["quality_html"]).stat().st_size < 10_000_000
        text = html.read_text(errors="replace")
        assert '<script src="http' not in text and 'stylesheet" href="http' not in text  # opens offline
        # index: newest first, both listed; JSON summary on disk
        index = (folder / "index.html").read_text()
        assert index.index(second["id"]) < index.index(first["id"])
        assert "not enough data (n=50 &lt; min 200)" in index
        assert [x["id"] for x in load_summaries(folder)] == [second["id"], first["id"]]
        assert json.loads((folder / f"{second['id']}.json").read_text())["status"] == "drift_critical"
        # store metadata
        metas = store.list_reports(10)
        assert [m["_id"] for m in metas] == [second["id"], first["id"]]
        assert metas[0]["features"]["total_trans_ct"]["status"] == "critical"
        assert metas[1]["status"] == "insufficient_data"
        store.close()


def test_report_flow_under_prefect(tmp_path, monkeypatch, contract, reference_run, mlflow_uri, prefect_harness):
    """The deployed entrypoint `flows/report_flow.py:report_flow`, run as a Prefect flow on the SQLite store."""
    if SQLiteStore is None:
        pytest.skip("churnops.store.sqlite not available")
    from flows.report_flow import report_flow

    db = tmp_path / "predictions.db"
    store = SQLiteStore(db)
    log_window(store, contract, 400, seed=3, end=time.time() - 5, hours=1.0, run_id=reference_run)
    store.close()
    for k, v in {
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "STATE_DIR": str(tmp_path / "state"),
        "REPORTS_DIR": str(tmp_path / "reports"),
        "PREDICTION_DB_PATH": str(db),
        "REPORT_MAX_ROWS": "500",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MONGODB_URI", raising=False)
    out = report_flow(window_hours=2.0)
    assert report_flow.name == "prediction-report"
    assert out["status"] == "ok" and out["n"] == 400 and out["drifted_features"] == []
    assert (tmp_path / "reports" / out["files"]["html"]).exists()
    assert SQLiteStore(db).list_reports(1)[0]["_id"] == out["id"]


def test_prune_keeps_newest(tmp_path):
    from reporting.report import prune_reports

    for i in range(5):
        (tmp_path / f"report-2026010{i}T000000Z.json").write_text("{}")
        (tmp_path / f"report-2026010{i}T000000Z.html").write_text("x")
    removed = prune_reports(tmp_path, 2)
    assert len(removed) == 3
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [
        "report-20260103T000000Z.json",
        "report-20260104T000000Z.json",
    ]
