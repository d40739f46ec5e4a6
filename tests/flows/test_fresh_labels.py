"""Fresh labels end to end on real servers: logged predictions + feedback -> collect-labels ->
a new snapshot that the trigger passes to training -> lineage names both snapshots."""

from __future__ import annotations

import time

import pandas as pd


def log_traffic(s, real_data_path, n=300):
    """Log `n` real customers as predictions (half HTTP, half stream) and their outcomes as feedback."""
    from churnops.cleaning import clean_frame
    from churnops.contract import load_contract
    from churnops.store.factory import open_store

    contract = load_contract(s.dataset)
    clean = clean_frame(pd.read_csv(real_data_path), contract).sample(n, random_state=7).reset_index(drop=True)
    now = time.time()
    preds, fb = [], []
    for i, row in clean.iterrows():
        rid = f"fresh-{i}"
        feats = {
            k: (None if pd.isna(v) else (float(v) if contract.features[k].kind == "numeric" else v))
            for k, v in row[contract.feature_names].items()
        }
        preds.append(
            {
                "_id": rid,
                "request_id": rid,
                "ts": now - 200 + i * 0.1,
                "source": "http" if i % 2 else "stream",
                "model_run_id": "r",
                "model_version": "1",
                "route": "champion",
                "features": feats,
                "probability": 0.5,
                "decision": 0,
                "latency_ms": 1.0,
            }
        )
        fb.append({"request_id": rid, "outcome": int(row[contract.target.name]), "ts": now - 100 + i * 0.1})
    fb += [
        {"request_id": "never-predicted", "outcome": 1, "ts": now - 50},
        {"request_id": "fresh-invalid", "outcome": 9, "ts": now - 40},
    ]
    store = open_store(s)
    try:
        store.insert_predictions(preds)
        store.add_feedback_many(fb)
    finally:
        store.close()
    return clean


def test_collect_labels_snapshot_reaches_training_through_the_trigger(
    trained, own_model, real_data_path, prefect_harness
):
    from churnops.contract import load_contract
    from churnops.feature_store import latest_snapshot, snapshot_at, snapshot_metadata
    from churnops.registry import client
    from churnops.store.factory import open_store
    from flows.labels_flow import labels_collector
    from flows.train_flow import train_flow
    from reporting.trigger import default_start_training, evaluate_trigger
    from tests.support.monitoring import CRITICAL

    contract = load_contract(own_model.dataset)
    parent = latest_snapshot(contract, own_model)
    log_traffic(own_model, real_data_path)

    started = []

    class FlowRun:
        id = "run-1"

    def run(name, **kw):  # stands in for prefect's run_deployment: records what the trigger asks for
        started.append((name, kw))
        return FlowRun()

    store = open_store(own_model)
    try:
        d = evaluate_trigger(
            store,
            own_model,
            CRITICAL,
            None,
            start_training=default_start_training(own_model, labels_collector(own_model), run=run),
            alert=False,
        )
    finally:
        store.close()
    assert d["action"] == "started" and d["flow_run_id"] == "run-1"
    ((name, kw),) = started
    params = kw["parameters"]
    assert name == "train-churn-model/churn-sweep" and params == d["parameters"]  # the churn line's deployment
    snap = snapshot_at(params["snapshot"], contract, own_model)
    meta = snapshot_metadata(snap, own_model)
    # 300 joined (the unknown id and the invalid outcome counted, not used); 20 % newest held out
    assert snap.source == "feedback" and meta["parent-snapshot"] == parent.uri and meta["policy"] == "append"
    assert (meta["labels"], meta["new-rows"], meta["holdout-rows"]) == ("302", "240", "60")
    assert snap.rows == parent.rows + 240
    assert latest_snapshot(contract, own_model).sha256 == snap.sha256

    out = train_flow(n_trials=2, data_profile=False, **params)
    tags = client(own_model).get_run(out["run_id"]).data.tags
    assert tags["dataset_sha256"] == snap.sha256 and tags["parent_snapshot"] == parent.uri
    assert tags["parent_sha256"] == parent.sha256 and tags["holdout_snapshot"] == params["holdout"]
    gain = next(r for r in out["rules"] if r["name"] == "min_improvement_auc_roc")
    assert "fresh slice" in gain["detail"] and "test split" in gain["detail"]


def test_collect_labels_with_too_few_labels_writes_nothing(trained, own_model, prefect_harness):
    from flows.labels_flow import collect_labels_flow

    out = collect_labels_flow(since=time.time() + 3600)
    assert out["snapshot"] is None and "not enough labels" in out["status"] and out["report"]["labels"] == 0
