"""Monitoring config: valid YAML/JSON, every dashboard/alert expression uses a metric that exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

MON = Path(__file__).resolve().parents[2] / "monitoring"
METRIC = re.compile(r"\b(churn_[a-z0-9_]+)")


def defined_metrics() -> set[str]:
    """Sample names the servers actually expose: serving.metrics + churnops.monitoring.gauges (fresh registries)
    + the /v2 routes' counter and histogram (serving.oip, created once in the default registry)."""
    from prometheus_client import CollectorRegistry

    from churnops.monitoring.gauges import DriftGauges

    reg = CollectorRegistry()
    DriftGauges(reg, multiprocess_mode=None)
    from serving.metrics import Metrics
    from serving.oip import v2_metrics

    Metrics(reg)
    families = list(reg.collect()) + [m for c in v2_metrics() for m in c.describe()]
    names = set()
    for m in families:
        if m.type == "counter":
            names.add(m.name + "_total")
        elif m.type == "histogram":
            names |= {m.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(m.name)
    return names


def test_dashboard_exprs_reference_defined_metrics():
    dash = json.loads((MON / "grafana" / "dashboards" / "churn.json").read_text())
    defined = defined_metrics()
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(dash["panels"]) >= 8 and len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    used = set()
    for e in exprs:
        names = METRIC.findall(e)
        assert names, e
        for n in names:
            assert n in defined, f"{n} in {e!r} is not a metric the servers define"
        used |= set(names)
    # everything the issue asks for is on the dashboard
    for need in (
        "churn_http_requests_total",
        "churn_prediction_latency_seconds_bucket",
        "churn_predictions_total",
        "churn_rejections_total",
        "churn_feature_psi",
        "churn_prediction_psi",
        "churn_realized_auc",
        "churn_feature_drift_status",
        "churn_v2_predictions_total",  # the Open Inference Protocol routes (serving/oip.py)
        "churn_v2_latency_seconds_bucket",
        "churn_shadow_requests_total",  # shadow traffic (serving/shadow.py)
        "churn_window_rejection_rate",  # the monitored window's rejections (churnops/monitoring/rejections.py)
        "churn_window_rejections",
    ):
        assert need in used
    text = json.dumps(dash)
    for q in ("0.50", "0.95", "0.99"):
        assert f"histogram_quantile({q}" in text
        assert f"histogram_quantile({q}, sum by (le, model) (rate(churn_v2_latency_seconds_bucket" in text


def test_dashboard_panels_do_not_overlap_and_use_the_provisioned_datasource():
    dash = json.loads((MON / "grafana" / "dashboards" / "churn.json").read_text())
    ds = yaml.safe_load((MON / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    cells: dict[tuple[int, int], int] = {}
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == uid and all(
            t.get("datasource", p["datasource"])["uid"] == uid for t in p["targets"]
        )
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['id']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = p["id"]


def test_prometheus_and_grafana_yaml():
    defined = defined_metrics()
    for name in ("prometheus.yml", "prometheus.local.yml"):
        cfg = yaml.safe_load((MON / name).read_text())
        jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
        assert jobs["churn-api"]["metrics_path"] == "/metrics"
        assert jobs["churn-drift"]["metrics_path"] == "/drift/metrics"
        assert all(t.endswith(":9696") for t in jobs["churn-api"]["static_configs"][0]["targets"])
    assert yaml.safe_load((MON / "prometheus.local.yml").read_text())["scrape_configs"][0]["static_configs"][0][
        "targets"
    ] == ["127.0.0.1:9696"]
    rules = yaml.safe_load((MON / "alerts.yml").read_text())
    for r in [r for g in rules["groups"] for r in g["rules"]]:
        assert all(n in defined for n in METRIC.findall(r["expr"])), r["expr"]
    ds = yaml.safe_load((MON / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus" and ds["datasources"][0]["uid"] == "churn-prometheus"
    prov = yaml.safe_load((MON / "grafana" / "provisioning" / "dashboards" / "churn.yml").read_text())
    assert prov["providers"][0]["type"] == "file"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.local.yml"])
def test_promtool_check_config(name):
    r = subprocess.run(["promtool", "check", "config", name], cwd=MON, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 15 rules found" in r.stdout + r.stderr


def require_promtool() -> str:
    """promtool (Debian package prometheus, `make system-deps`): installed here when root with apt, else fail."""
    if shutil.which("promtool") is None:
        subprocess.run(["make", "-s", "system-deps"], cwd=MON.parent, capture_output=True, timeout=600)
    path = shutil.which("promtool")
    assert path, "promtool missing: run `make system-deps` (Debian package prometheus)"
    return path


def test_every_alert_rule_fires_in_promtool_unit_tests():
    """monitoring/alerts_test.yml: each rule of alerts.yml fires on series that should fire it (values by hand)."""
    rules = yaml.safe_load((MON / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((MON / "alerts_test.yml").read_text())
    fired = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert names == fired, names ^ fired
    r = subprocess.run(
        [require_promtool(), "test", "rules", "alerts_test.yml"], cwd=MON, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
