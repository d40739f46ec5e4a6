"""Prefect flow "collect-labels": outcomes from /feedback + logged features -> a new feature-store snapshot.

Thin over `churnops.labels`: reads the labels received since the last collection (checkpoint
`labels:last_collected` in the prediction store) and the predictions logged up to
`LABEL_LOOKBACK_HOURS` before them, joins them by `request_id`, sets aside the newest slice for
evaluation, builds the training set from the latest snapshot by `LABEL_POLICY`, checks it
against the data contract and stores it (SHA-256, metadata: source `feedback`, parent snapshot,
window, row counts). `make collect-labels` runs it now.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from prefect import flow

from churnops.cli import fail, flow_logger, setup_logging
from churnops.contract import load_any_contract
from churnops.feature_store import latest_snapshot, put_holdout, put_snapshot, read_snapshot
from churnops.image.labels import join_image_labels, publish_labelled_version
from churnops.labels import build_training_set, join_labels
from churnops.model_line import for_dataset
from churnops.pipeline import validate_clean
from churnops.registry import alias_version, client
from churnops.settings import get_settings
from churnops.store.factory import open_store
from churnops.store.protocols import CheckpointedRecords

FLOW_NAME = "collect-labels"
CHECKPOINT = "labels:last_collected"


@flow(name=FLOW_NAME, log_prints=True)
def collect_labels_flow(
    since: float | None = None, until: float | None = None, policy: str | None = None, dataset: str | None = None
) -> dict:
    """Join the labels of [since, until) of `dataset` (default DATASET) to their features and store a
    new snapshot of that data set. Returns the summary."""
    s = for_dataset(get_settings(), dataset)  # the data set's own prediction log and snapshots
    contract = load_any_contract(s.dataset)
    policy = policy or s.label_policy
    store = open_store(s)
    try:
        until = time.time() if until is None else float(until)
        if since is None:
            last = store.get_checkpoint(CHECKPOINT)
            since = float(last) if last else 0.0
        if contract.task == "image_classification":
            return collect_image_labels(s, contract, store, since, until)
        feedback = store.find_feedback(start=since, end=until)
        preds = store.find_predictions(max(0.0, since - s.label_lookback_hours * 3600.0), until)
        rows, rep = join_labels(preds, feedback, contract)
        summary = {
            "window": {"start": since, "end": until},
            "policy": policy,
            "report": rep.as_dict(),
            "snapshot": None,
            "holdout": None,
        }
        log = flow_logger(__name__)
        if rep.joined < s.label_min_rows:
            summary["status"] = f"not enough labels: {rep.joined} joined < LABEL_MIN_ROWS {s.label_min_rows}"
            log.info("collect-labels: %s", json.dumps(summary, default=str))
            return summary
        parent = latest_snapshot(contract, s)
        train, hold = build_training_set(
            read_snapshot(parent, contract, s),
            rows,
            contract,
            policy,  # type: ignore[arg-type]
            s.label_window_rows,
            s.label_holdout_fraction,
        )
        validate_clean(train, contract, f"training set from feedback ({policy})")
        meta = {
            "parent-snapshot": parent.uri,
            "parent-sha256": parent.sha256,
            "policy": policy,
            "window-start": repr(since),
            "window-end": repr(until),
            "labels": rep.labels,
            "new-rows": rep.joined - len(hold),
            "holdout-rows": len(hold),
            "parent-rows": parent.rows,
        }
        holdout_uri = put_holdout(hold, contract, s) if len(hold) else None
        if holdout_uri:
            meta["holdout"] = holdout_uri
        snap = put_snapshot(train, contract, "feedback", parent.synthetic, s, extra_meta=meta)
        store.set_checkpoint(CHECKPOINT, repr(until))
        summary |= {
            "status": "snapshot written",
            "snapshot": snap.uri,
            "snapshot_sha256": snap.sha256,
            "parent": parent.uri,
            "rows": len(train),
            "holdout": holdout_uri,
            "holdout_rows": len(hold),
        }
        log.info("collect-labels: %s", json.dumps(summary, default=str))
        return summary
    finally:
        store.close()


def champion_data_uri(s, contract) -> str:
    """The published image data set version the champion was trained on (its run's `data_uri`)."""
    mv = alias_version(contract.model_name, "champion", s)
    if mv is None:
        raise LookupError(f"{contract.model_name} has no champion: train one first (`make demo-image`)")
    uri = client(s).get_run(mv.run_id).data.tags.get("data_uri", "")
    if not uri.startswith("s3://"):
        raise LookupError(f"{contract.model_name} v{mv.version} names no published data set (data_uri {uri!r})")
    return uri


def collect_image_labels(s, contract, store: CheckpointedRecords, since: float, until: float) -> dict:
    """Image labels of [since, until) joined to the images the model saw -> a new data set version whose
    parent is the champion's; the summary's `parameters` are the image training deployment's."""
    feedback = store.find_feedback(start=since, end=until)
    preds = store.find_predictions(max(0.0, since - s.label_lookback_hours * 3600.0), until)
    labels, rep = join_image_labels(preds, feedback, contract)
    summary = {"window": {"start": since, "end": until}, "report": rep.as_dict(), "dataset": None, "snapshot": None}
    log = flow_logger(__name__)
    parent = champion_data_uri(s, contract)
    if rep.joined < s.label_min_rows:
        summary["status"] = f"not enough labelled images: {rep.joined} joined < LABEL_MIN_ROWS {s.label_min_rows}"
        # the trigger then retrains on the champion's own version, as the tabular one does on the latest snapshot
        summary["parameters"] = {"contract": s.dataset, "data": parent}
        log.info("collect-labels: %s", json.dumps(summary, default=str))
        return summary
    version = publish_labelled_version(labels, parent, contract, s, (since, until))
    store.set_checkpoint(CHECKPOINT, repr(until))
    summary |= {
        "status": "data set version written",
        "dataset": version["uri"],
        "dataset_sha256": version["sha256"],
        "parent": parent,
        "rows": version["images"],
        "new_images": version["new"],
        "parameters": {"contract": s.dataset, "data": version["uri"]},
    }
    log.info("collect-labels: %s", json.dumps(summary, default=str))
    return summary


def labels_collector(settings) -> Callable[[], dict]:
    """The label collector the retrain trigger runs before it starts training
    (`reporting.trigger.default_start_training`): the labels of this data set's own prediction log."""

    def collect() -> dict:
        return collect_labels_flow(dataset=settings.dataset)

    return collect


def main() -> None:
    setup_logging()
    try:
        out = collect_labels_flow()
    except Exception as exc:
        fail(exc, f"flow {FLOW_NAME}")
    r = out["report"]
    print(
        f"{out['status']}: {r['labels']} label(s), {r['joined']} joined; unknown ids {r['unknown_ids']}, "
        f"duplicates {r['duplicates']}, conflicting {r['conflicting']}, invalid outcomes {r['invalid_outcomes']}, "
        f"invalid features {r['invalid_features']}, late {r['late']}"
    )
    if out.get("dataset"):
        print(
            f"image data set {out['dataset']} ({out['rows']} images, {out['new_images']} new, parent {out['parent']})"
        )
    if out.get("snapshot"):
        print(f"snapshot {out['snapshot']} ({out['rows']} rows, policy {out['policy']}, parent {out['parent']})")
        print(f"held out {out['holdout']} ({out['holdout_rows']} newest labelled rows)")


if __name__ == "__main__":
    main()
