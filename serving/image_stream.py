"""The stream consumer's image records: `{"request_id": ..., "image_uri": "s3://bucket/key"}`.

`ImageProcessor` is the consumer's `RecordProcessor` (serving/stream_records.py) when DATASET names
an image contract (serving/tasks.py).
Each record's object is fetched from S3 (only from BUCKET or IMAGE_URI_BUCKETS; refused unread
when larger than IMAGE_MAX_BODY_BYTES), decoded and checked like a `POST /predict/image` body
(serving/image.py), predicted, logged (before anything is put), and its result put on the
results stream. A record that fails for itself (not a JSON object, no or bad image_uri, object
missing, too big, not an image, wrong size, unsupported raw) goes to the dead-letter stream with
its reason_code and the shard moves on. A transient S3 error (endpoint down, throttling, 5xx)
raises: the consumer retries the whole batch from its checkpoint later, so nothing is lost.

A prediction that fails is the record's fault only when the model still predicts a blank image of
the same size: otherwise the model fails on everything (broken model, missing runtime), which
raises ModelFailure as on the tabular path: nothing is emitted, the checkpoint stays, and the
shard retries the batch with backoff until a working model is loaded.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from botocore.exceptions import ClientError

from churnops.aws import client, is_transient
from churnops.s3keys import UnsafeKeyError, split_s3_uri
from serving.encoding import dumps
from serving.image import DecodedImage, answer, decode, log_entry, predict
from serving.inference import REQUEST_ID_RULE, BadInput, valid_request_id
from serving.stream_records import BatchOutcome, ModelFailure, RecordSink, arrival, decode_payload

log = logging.getLogger(__name__)


def model_works(ms, img: DecodedImage) -> bool:
    """Whether every model of the set predicts a blank image shaped like `img` (the model, not the record)."""
    try:
        for m in ms.models():
            m.bundle.predict(np.zeros_like(img.x)[None])
        return True
    except Exception as exc:
        log.error("image model cannot predict a blank image (%s: %s)", type(exc).__name__, exc)
        return False


def allowed_buckets(s) -> set[str]:
    extra = {b.strip() for b in (s.image_uri_buckets or "").split(",") if b.strip()}
    return extra or {s.bucket}


def parse_record(obj, seq: str, s) -> tuple[str, str, str]:
    """(request_id, bucket, key) of a decoded record; BadInput names what is off."""
    if not isinstance(obj, dict):
        raise BadInput(
            "expected a JSON object",
            {"record": f"expected {{request_id, image_uri}}, got {type(obj).__name__}"},
            "not_object",
        )
    uri = obj.get("image_uri")
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise BadInput("invalid image_uri", {"image_uri": "expected s3://<bucket>/<key>"}, "invalid_image_uri")
    try:
        bucket, key = split_s3_uri(uri, "image_uri")  # no `..`, `.`, empty or absolute segments
    except UnsafeKeyError as exc:
        raise BadInput("invalid image_uri", {"image_uri": str(exc)}, "invalid_image_uri") from exc
    buckets = allowed_buckets(s)
    if bucket not in buckets:
        raise BadInput(
            "image_uri bucket not allowed",
            {"image_uri": f"bucket {bucket!r} is not one of {sorted(buckets)} (IMAGE_URI_BUCKETS)"},
            "bucket_not_allowed",
        )
    rid = obj.get("request_id")
    if rid is None:
        return seq, bucket, key
    rid = str(rid).strip() if isinstance(rid, (str, int)) and not isinstance(rid, bool) else ""
    if not valid_request_id(rid):
        raise BadInput("invalid request_id", {"request_id": REQUEST_ID_RULE}, "invalid_request_id")
    return rid, bucket, key


def fetch(s3, bucket: str, key: str, limit: int) -> bytes:
    """The object's bytes; BadInput when it is missing or larger than `limit` (then its body is not read)."""
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_transient(exc):
            raise
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound"):
            raise BadInput("image not found", {"image_uri": f"s3://{bucket}/{key}: {code}"}, "image_not_found") from exc
        raise BadInput(
            "image could not be fetched", {"image_uri": f"s3://{bucket}/{key}: {code or exc}"}, "image_fetch_failed"
        ) from exc
    body = obj["Body"]
    try:
        size = int(obj.get("ContentLength") or 0)
        if size > limit:
            raise BadInput(
                "image too large",
                {"image_uri": f"s3://{bucket}/{key} is {size} bytes > the {limit} byte limit (IMAGE_MAX_BODY_BYTES)"},
                "image_too_large",
            )
        data = body.read(limit + 1)
        if len(data) > limit:
            raise BadInput(
                "image too large",
                {"image_uri": f"s3://{bucket}/{key} is over the {limit} byte limit (IMAGE_MAX_BODY_BYTES)"},
                "image_too_large",
            )
        return data
    finally:
        body.close()


class ImageProcessor:
    """The consumer's `RecordProcessor` for image_uri records: results and dead letters, log records."""

    def __init__(self, sink: RecordSink, contract):
        self.sink = sink
        self.s = sink.s
        self.contract = contract
        self._s3 = None  # made on the first batch: an S3 client per consumer

    def s3(self):
        """The S3 client the images are fetched with."""
        if self._s3 is None:
            self._s3 = client("s3", self.s, max_attempts=2, connect_timeout=2, read_timeout=10)
        return self._s3

    def process(self, shard_id: str, records: list[dict]) -> BatchOutcome:
        """Each record: fetch, decode, predict; what fails for itself is a dead letter (S3 down, a model
        that fails on everything: raised, the batch is retried from its checkpoint)."""
        s, contract, sink, metrics = self.s, self.contract, self.sink, self.sink.metrics
        ms = sink.models.current
        out = BatchOutcome()
        for rec in records:
            t0 = time.perf_counter()
            seq = rec["SequenceNumber"]
            try:
                rid, bucket, key = parse_record(decode_payload(rec["Data"]), seq, s)
                img = decode(fetch(self.s3(), bucket, key, int(s.image_max_body_bytes)), None, contract, "image")
            except BadInput as e:
                metrics.rejections.labels("stream", e.reason).inc()
                sink.rejections.add("stream", e.reason, e.details)
                out.dead.append(sink.dead_letter(shard_id, rec, e.error, e.reason, e.details))
                continue
            except Exception as e:
                if is_transient(e):
                    raise  # S3 down: retry the batch later from the checkpoint
                metrics.rejections.labels("stream", "undecodable").inc()
                sink.rejections.add("stream", "undecodable")
                out.dead.append(
                    sink.dead_letter(
                        shard_id,
                        rec,
                        f"the image could not be decoded ({type(e).__name__})",
                        "undecodable",
                        {"exception": f"{type(e).__name__}: {e}"},
                    )
                )
                continue
            try:
                pred = predict(ms, rid, img)
            except Exception as e:
                if ms is None or not model_works(ms, img):
                    raise ModelFailure(f"the image model fails on every record ({type(e).__name__}: {e})") from e
                metrics.rejections.labels("stream", "prediction_failed").inc()
                out.dead.append(
                    sink.dead_letter(
                        shard_id,
                        rec,
                        "the image could not be predicted",
                        "prediction_failed",
                        {"exception": f"{type(e).__name__}: {e}"},
                    )
                )
                continue
            now = time.time()
            uri = f"s3://{bucket}/{key}"
            body = answer(pred, rid) | {"sequence_number": seq, "shard_id": shard_id, "image_uri": uri, "ts": now}
            out.results.append({"Data": dumps(body), "PartitionKey": rid[:256]})
            out.logs.append(
                log_entry(
                    sink.log_id(shard_id, seq),
                    rid,
                    pred,
                    img,
                    "stream",
                    (time.perf_counter() - t0) * 1000,
                    ts=arrival(rec, now),
                    shard_id=shard_id,
                    sequence_number=seq,
                    image_uri=uri,
                )
            )
            m = pred.model
            metrics.predictions.labels("stream", m.route, str(m.version), pred.label).inc()
        return out
