"""Prometheus gauges of drift and realized performance (multiprocess-safe, `mostrecent`).

Gauges live in the default registry, so the API's `/metrics` (gunicorn multiprocess collector)
shows them; `drift_exposition` renders the same numbers from a private registry for the
`/drift/metrics` scrape endpoint.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from churnops.monitoring.drift import STATUS_CODE

NAMES = {
    "feature_psi": "churn_feature_psi",
    "feature_status": "churn_feature_drift_status",
    "prediction_psi": "churn_prediction_psi",
    "realized_auc": "churn_realized_auc",
    "realized_rmse": "churn_realized_rmse",
    "window_rows": "churn_monitor_window_rows",
    "image_wasserstein": "churn_image_channel_wasserstein",
    "image_mmd_p_value": "churn_image_embedding_mmd_p_value",
    "image_mmd": "churn_image_embedding_mmd2",
    "realized_accuracy": "churn_realized_accuracy",
    "estimated_auc": "churn_estimated_auc",
    "estimated_auc_lower": "churn_estimated_auc_lower",
    "estimated_auc_upper": "churn_estimated_auc_upper",
    "estimated_available": "churn_estimated_performance_available",
    "missing_rate": "churn_feature_missing_rate",
    "out_of_range_rate": "churn_feature_out_of_range_rate",
    "unseen_rate": "churn_feature_unseen_category_rate",
    "quality_status": "churn_data_quality_status",
    "quality_failed": "churn_data_quality_failed_features",
    "report_last": "churn_report_last_timestamp_seconds",
    "rejection_rate": "churn_window_rejection_rate",
    "rejections": "churn_window_rejections",
}


class DriftGauges:
    def __init__(self, registry: CollectorRegistry | None = None, multiprocess_mode: str | None = "mostrecent"):
        kw = {"registry": registry} if registry is not None else {}
        if multiprocess_mode:
            kw["multiprocess_mode"] = multiprocess_mode
        self.feature_psi = Gauge(NAMES["feature_psi"], "PSI of a feature vs the training reference", ["feature"], **kw)
        self.feature_status = Gauge(
            NAMES["feature_status"], "Drift status per feature: 0 ok, 1 warn, 2 critical", ["feature"], **kw
        )
        self.prediction_psi = Gauge(
            NAMES["prediction_psi"], "PSI of predicted probabilities (a regression: values) vs the reference", **kw
        )
        self.realized_auc = Gauge(
            NAMES["realized_auc"], "AUC-ROC on predictions with feedback outcomes", ["model_version", "route"], **kw
        )
        self.realized_rmse = Gauge(
            NAMES["realized_rmse"],
            "RMSE of a regression on predictions with feedback values",
            ["model_version", "route"],
            **kw,
        )
        self.window_rows = Gauge(NAMES["window_rows"], "Predictions in the monitored window", **kw)
        # image monitoring (churnops/image/monitor.py): set only for windows of an image server
        self.image_wasserstein = Gauge(
            NAMES["image_wasserstein"],
            "Wasserstein distance of per-image channel means vs the reference",
            ["channel"],
            **kw,
        )
        self.image_mmd_p_value = Gauge(
            NAMES["image_mmd_p_value"], "Permutation p-value of the MMD test on CNN embeddings vs the reference", **kw
        )
        self.image_mmd = Gauge(NAMES["image_mmd"], "Squared MMD of CNN embeddings vs the reference", **kw)
        self.realized_accuracy = Gauge(
            NAMES["realized_accuracy"],
            "Accuracy on image predictions with feedback classes",
            ["model_version", "route"],
            **kw,
        )
        # estimated performance before labels (churnops/monitoring/estimated.py: CBPE)
        self.estimated_auc = Gauge(NAMES["estimated_auc"], "Estimated AUC-ROC of the window (CBPE, no labels)", **kw)
        self.estimated_auc_lower = Gauge(NAMES["estimated_auc_lower"], "Lower end of the estimated AUC band", **kw)
        self.estimated_auc_upper = Gauge(NAMES["estimated_auc_upper"], "Upper end of the estimated AUC band", **kw)
        self.estimated_available = Gauge(
            NAMES["estimated_available"], "1 when the window has an estimated performance, else 0", **kw
        )
        # data quality per feature (churnops/monitoring/quality.py)
        self.missing_rate = Gauge(NAMES["missing_rate"], "Share of missing values in the window", ["feature"], **kw)
        self.out_of_range_rate = Gauge(
            NAMES["out_of_range_rate"], "Share of values outside the training reference's range", ["feature"], **kw
        )
        self.unseen_rate = Gauge(
            NAMES["unseen_rate"], "Share of values in categories the training reference never had", ["feature"], **kw
        )
        self.quality_status = Gauge(NAMES["quality_status"], "Data quality of the window: 0 ok, 1 fail", **kw)
        self.quality_failed = Gauge(NAMES["quality_failed"], "Features failing the data-quality checks", **kw)
        self.report_last = Gauge(NAMES["report_last"], "Unix time of the newest monitoring report", **kw)
        # rejected records of the window (churnops/monitoring/rejections.py)
        self.rejection_rate = Gauge(
            NAMES["rejection_rate"], "Share of the window's records rejected by the API and consumers", **kw
        )
        self.rejections = Gauge(NAMES["rejections"], "Records rejected in the window, by reason", ["reason"], **kw)

    def update(self, result: dict) -> None:
        drift = result.get("drift") or {}
        for name, f in (drift.get("features") or {}).items():
            self.feature_psi.labels(name).set(f["psi"])
            self.feature_status.labels(name).set(STATUS_CODE[f["status"]])
        pred = drift.get("prediction")
        if pred and pred.get("psi") is not None:
            self.prediction_psi.set(pred["psi"])
        for g in (result.get("performance") or {}).get("by_model") or []:
            if g.get("auc_roc") is not None:
                self.realized_auc.labels(g["model_version"], g["route"]).set(g["auc_roc"])
            if g.get("rmse") is not None:
                self.realized_rmse.labels(g["model_version"], g["route"]).set(g["rmse"])
        self.window_rows.set(result.get("n", 0))
        est = result.get("estimated_performance") or {}
        self.estimated_available.set(1 if est.get("available") else 0)
        if est.get("auc_roc") is not None:
            self.estimated_auc.set(est["auc_roc"])
            if est.get("auc_band"):
                self.estimated_auc_lower.set(est["auc_band"][0])
                self.estimated_auc_upper.set(est["auc_band"][1])
        if result.get("last_report_ts") is not None:
            self.report_last.set(result["last_report_ts"])
        quality = result.get("quality")
        if quality:
            for name, f in quality["features"].items():
                self.missing_rate.labels(name).set(f["missing_rate"])
                if f.get("out_of_range_rate") is not None:
                    self.out_of_range_rate.labels(name).set(f["out_of_range_rate"])
                if f.get("unseen_rate") is not None:
                    self.unseen_rate.labels(name).set(f["unseen_rate"])
            self.quality_status.set(1 if quality["status"] == "fail" else 0)
            self.quality_failed.set(len(quality["failed_features"]))
        rejected = result.get("rejections") or {}
        if rejected.get("available"):
            self.rejection_rate.set(rejected["rate"])
            for reason, n in rejected["by_reason"].items():
                self.rejections.labels(reason).set(n)
        image = result.get("image")
        if image:  # image monitoring hook
            for ch, v in image["channel_wasserstein"].items():
                self.image_wasserstein.labels(ch).set(v)
            self.image_mmd_p_value.set(image["embedding_mmd"]["p_value"])
            self.image_mmd.set(image["embedding_mmd"]["mmd2"])
            for g in (result.get("performance") or {}).get("by_model") or []:
                if g.get("accuracy") is not None:
                    self.realized_accuracy.labels(g["model_version"], g["route"]).set(g["accuracy"])


_GAUGES: DriftGauges | None = None


def gauges() -> DriftGauges:
    """Process-wide gauges in the default registry (created once)."""
    global _GAUGES
    if _GAUGES is None:
        _GAUGES = DriftGauges()
    return _GAUGES


def drift_exposition(result: dict) -> bytes:
    """Prometheus text of one result from a fresh private registry."""
    reg = CollectorRegistry()
    DriftGauges(reg, multiprocess_mode=None).update(result)
    return generate_latest(reg)
