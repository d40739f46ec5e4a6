"""Fresh labelled images: `/feedback` classes joined to the images the model saw, as a new data set version.

`join_image_labels` is pure: every label (a class index, `churnops.image.feedback`) is matched by
its `request_id` to the latest prediction logged for that id at or before the label's time, and
that prediction must name the image it saw in `image_uri` (a stream record's object, or an HTTP
upload kept with IMAGE_KEEP_UPLOADS=true). Labels for ids never predicted, for predictions whose
image was not kept, given twice (same class: used once; different: dropped) or with an invalid
class are counted in the report, never used.

`publish_labelled_version` appends the labelled images to the parent version's files
(`<class>/<sha256>.<ext>`) and publishes the result as a new immutable version
(`churnops.image.feature_store.put_images`), its manifest naming the parent and the label window.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from churnops.aws import client
from churnops.image.contract import ImageContract
from churnops.image.dataset import dataset_sha256, list_images
from churnops.image.feature_store import fetch_images, put_images
from churnops.labels import LabelReport
from churnops.settings import Settings


@dataclass(frozen=True)
class ImageLabel:
    request_id: str
    image_uri: str
    label: int
    label_ts: float


def join_image_labels(
    predictions: list[dict], feedback: list[dict], contract: ImageContract, max_problems: int = 20
) -> tuple[list[ImageLabel], LabelReport]:
    """(one labelled image per request id, report) of the window's feedback and logged predictions."""
    rep = LabelReport(labels=len(feedback))
    by_id: dict[str, list[dict]] = defaultdict(list)
    for p in predictions:
        if p.get("request_id") is not None:
            by_id[str(p["request_id"])].append(p)
    labels: dict[str, list[tuple[float, int]]] = defaultdict(list)
    n = len(contract.classes)

    def problem(text: str) -> None:
        if len(rep.problems) < max_problems:
            rep.problems.append(text)

    for f in feedback:
        rid, v = str(f.get("request_id")), f.get("outcome")
        if isinstance(v, float) and v.is_integer():  # a store may keep the class index as a number
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
            rep.invalid_outcomes += 1
            problem(f"{rid}: outcome {v!r} is not a class index 0..{n - 1}")
            continue
        labels[rid].append((float(f.get("ts") or 0.0), v))
    out: list[ImageLabel] = []
    for rid, got in labels.items():
        classes = {c for _, c in got}
        if len(classes) > 1:
            rep.conflicting += 1
            problem(f"{rid}: conflicting classes {sorted(classes)}")
            continue
        rep.duplicates += len(got) - 1
        label_ts, label = max(got)
        before = [p for p in by_id.get(rid, []) if float(p.get("ts", 0.0)) <= label_ts]
        if not before:
            rep.unknown_ids += 1
            problem(f"{rid}: no prediction logged for this request id")
            continue
        pred = max(before, key=lambda p: float(p.get("ts", 0.0)))
        uri = pred.get("image_uri")
        if not uri:
            rep.invalid_features += 1
            problem(f"{rid}: the image was not kept (HTTP uploads need IMAGE_KEEP_UPLOADS=true)")
            continue
        src = str(pred.get("source") or "unknown")
        rep.by_source[src] = rep.by_source.get(src, 0) + 1
        out.append(ImageLabel(rid, str(uri), label, label_ts))
    rep.joined = len(out)
    return out, rep


def publish_labelled_version(
    labels: list[ImageLabel],
    parent_uri: str,
    contract: ImageContract,
    s: Settings,
    window: tuple[float, float],
) -> dict:
    """Parent files + the labelled images -> a new published version; returns {uri, sha256, images, new}."""
    parent_root, parent_manifest = fetch_images(parent_uri, contract, s)
    s3 = client("s3", s)
    (s.state_dir / "images").mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(prefix="labelled-", dir=s.state_dir / "images")
    try:
        root = Path(work)
        shutil.copytree(parent_root, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
        added = 0
        for lab in sorted(labels, key=lambda x: x.request_id):
            bucket, _, key = lab.image_uri.removeprefix("s3://").partition("/")
            path = root / contract.classes[lab.label] / PurePosixPath(key).name
            if path.exists():
                continue  # the same image labelled again: kept once
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            added += 1
        files = list_images(root, contract)
        sha = dataset_sha256(files)
        uri = put_images(
            files,
            sha,
            contract,
            s,
            str(parent_manifest.get("data_source", "real")),
            extra={
                "parent": parent_uri,
                "parent_sha256": parent_manifest.get("dataset_sha256"),
                "origin": "feedback",
                "labels": len(labels),
                "new_images": added,
                "window_start": window[0],
                "window_end": window[1],
            },
        )
        return {"uri": uri, "sha256": sha, "images": len(files), "new": added}
    finally:
        shutil.rmtree(work, ignore_errors=True)
