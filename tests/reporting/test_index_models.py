"""The reports index of several data sets: every report with its model, and one index per model."""

from __future__ import annotations

import json


def _summary(folder, rid: str, ts: float, model: str | None, status: str) -> None:
    doc = {"id": rid, "ts": ts, "status": status, "window": {"hours": 3}, "files": {"json": f"{rid}.json"}}
    doc["headline"] = {"n": 10, "n_window": 10, "message": f"msg of {rid}"}
    if model:
        doc["model"] = model
    (folder / f"{rid}.json").write_text(json.dumps(doc))


def test_index_lists_every_model_and_each_model_has_its_own(tmp_path):
    from reporting.index import write_index

    _summary(tmp_path, "report-1", 1_800_000_000, None, "ok")  # a report written before the field: churn
    _summary(tmp_path, "report-2-diabetes", 1_800_000_100, "diabetes-xgboost", "drift_warn")
    _summary(tmp_path, "report-3", 1_800_000_200, "churn-xgboost", "drift_critical")
    write_index(tmp_path)
    everything = (tmp_path / "index.html").read_text()
    assert all(f'id="report-{x}' in everything for x in ("1", "2-diabetes", "3"))
    assert 'href="index-churn-xgboost.html"' in everything and 'href="index-diabetes-xgboost.html"' in everything
    churn = (tmp_path / "index-churn-xgboost.html").read_text()
    assert 'id="report-1"' in churn and 'id="report-3"' in churn and "report-2-diabetes" not in churn
    diabetes = (tmp_path / "index-diabetes-xgboost.html").read_text()
    assert 'id="report-2-diabetes"' in diabetes and 'id="report-1"' not in diabetes and 'id="report-3"' not in diabetes
    assert "<h1>diabetes-xgboost: prediction reports</h1>" in diabetes
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_the_reports_server_serves_a_model_index_uncached(tmp_path):
    from reporting.index import write_index
    from reporting.webserver import reports_app

    _summary(tmp_path, "report-9-diabetes", 1_800_000_000, "diabetes-xgboost", "ok")
    write_index(tmp_path)
    r = reports_app(tmp_path).test_client().get("/index-diabetes-xgboost.html")
    assert r.status_code == 200 and b"report-9-diabetes" in r.data
    assert r.headers["Cache-Control"] == "no-cache"
