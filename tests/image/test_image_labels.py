"""`join_image_labels`: /feedback classes joined to the images the predictions named (pure, no servers)."""

from __future__ import annotations


def pred(rid: str, ts: float, uri: str | None = None, source: str = "http") -> dict:
    rec = {"request_id": rid, "ts": ts, "source": source, "decision": 0}
    if uri:
        rec["image_uri"] = uri
    return rec


def test_every_label_is_used_once_or_counted(raw_contract):
    from churnops.image.labels import ImageLabel, join_image_labels

    preds = [
        pred("a", 10, "s3://b/uploads/raw_digits/aaa.dng"),
        pred("b", 10, "s3://b/in/bbb.dng", source="stream"),
        pred("c", 10),  # an HTTP upload that was not kept
        pred("d", 10, "s3://b/uploads/raw_digits/ddd.dng"),
        pred("late", 50, "s3://b/uploads/raw_digits/late.dng"),  # logged after its label
        pred("a", 5, "s3://b/uploads/raw_digits/old.dng"),  # an older prediction of the same id
    ]
    feedback = [
        {"request_id": "a", "outcome": 3, "ts": 20},
        {"request_id": "a", "outcome": 3.0, "ts": 21},  # a duplicate (a store may keep numbers as floats)
        {"request_id": "b", "outcome": 9, "ts": 20},
        {"request_id": "c", "outcome": 1, "ts": 20},
        {"request_id": "d", "outcome": 1, "ts": 20},
        {"request_id": "d", "outcome": 2, "ts": 22},  # conflicting: dropped
        {"request_id": "x", "outcome": 4, "ts": 20},  # never predicted
        {"request_id": "e", "outcome": 10, "ts": 20},  # not a class index
        {"request_id": "f", "outcome": True, "ts": 20},
        {"request_id": "late", "outcome": 0, "ts": 20},
    ]
    labels, rep = join_image_labels(preds, feedback, raw_contract)
    assert sorted(labels, key=lambda x: x.request_id) == [
        ImageLabel("a", "s3://b/uploads/raw_digits/aaa.dng", 3, 21.0),
        ImageLabel("b", "s3://b/in/bbb.dng", 9, 20.0),
    ]
    assert (rep.labels, rep.joined, rep.duplicates, rep.conflicting) == (10, 2, 1, 1)
    assert (rep.unknown_ids, rep.invalid_outcomes, rep.invalid_features) == (2, 2, 1)
    assert rep.by_source == {"http": 1, "stream": 1}
    assert any("IMAGE_KEEP_UPLOADS" in p for p in rep.problems)
