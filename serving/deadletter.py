"""Dead-letter entries for the stream consumer: bounded in size whatever the record held.

An entry carries the reason, the record's coordinates and a preview of its payload: the whole
payload when it is at most `preview_bytes` (UTF-8 text as text, anything else base64), else its
first bytes with `payload_truncated: true`. Every entry carries the original size and SHA-256.
When a payload is truncated and an S3 client is given, the full payload is stored at
`s3://<bucket>/dead-letter/<stream>/<shard>/<sequence>-<sha256[:16]>` and referenced as
`payload_s3_uri` (`payload_s3_error` when that upload failed). `encode_entry` guarantees the
encoded entry is at most `max_entry_bytes` (shrinking the preview, then the details), far under
Kinesis' 1 MiB record limit, so no dead letter can make `put_records` fail on its size.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time

log = logging.getLogger(__name__)

KINESIS_RECORD_LIMIT = 1024 * 1024  # data + partition key
DETAIL_CHARS = 1000  # per detail value
DETAIL_KEYS = 50


def _text(v: object, limit: int = DETAIL_CHARS) -> str:
    s = v if isinstance(v, str) else repr(v)
    s = s.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates cannot be encoded downstream
    return s if len(s) <= limit else s[:limit] + f"... ({len(s)} characters)"


def bounded_details(details: object) -> dict:
    """At most DETAIL_KEYS entries of at most DETAIL_CHARS characters each, all text."""
    if not isinstance(details, dict):
        return {"details": _text(details)} if details else {}
    out = {_text(k, 200): _text(v) for k, v in list(details.items())[:DETAIL_KEYS]}
    if len(details) > DETAIL_KEYS:
        out["_omitted"] = f"{len(details) - DETAIL_KEYS} more"
    return out


def preview(data: bytes, limit: int) -> dict:
    """`payload`, `payload_encoding`, `payload_bytes`, `payload_sha256`, `payload_truncated` of `data`."""
    out = {"payload_bytes": len(data), "payload_sha256": hashlib.sha256(data).hexdigest()}
    try:
        data.decode("utf-8")
        text = True
    except UnicodeDecodeError:
        text = False
    if text:
        cut = data[:limit].decode("utf-8", "ignore")  # never splits a character
        out.update(payload=cut, payload_encoding="utf-8", payload_truncated=len(data) > limit)
    else:
        raw = data[: max(0, limit) * 3 // 4]  # base64 grows by 4/3
        out.update(
            payload=base64.b64encode(raw).decode(), payload_encoding="base64", payload_truncated=len(raw) < len(data)
        )
    return out


def encode_entry(entry: dict, max_entry_bytes: int) -> bytes:
    """JSON of `entry` (UTF-8, non-ASCII kept), at most `max_entry_bytes`: shrinks the payload preview
    (halving it), then the details, then the reason until it fits; says so in `payload_truncated`."""
    entry = dict(entry)
    while True:
        data = json.dumps(entry, ensure_ascii=False, default=str).encode("utf-8", "backslashreplace")
        if len(data) <= max_entry_bytes:
            return data
        p = entry.get("payload") or ""
        if p:
            entry["payload"] = p[: len(p) // 2]
            if entry.get("payload_encoding") == "base64":
                entry["payload"] = entry["payload"][: len(entry["payload"]) // 4 * 4]
            entry["payload_truncated"] = True
        elif entry.get("details"):
            entry["details"] = {"_omitted": "details too large for a dead-letter entry"}
            if (
                len(json.dumps(entry, ensure_ascii=False, default=str).encode("utf-8", "backslashreplace"))
                > max_entry_bytes
            ):
                entry["details"] = {}
        else:
            entry = {k: (_text(v, 200) if isinstance(v, str) else v) for k, v in entry.items()}
            if (
                len(json.dumps(entry, ensure_ascii=False, default=str).encode("utf-8", "backslashreplace"))
                > max_entry_bytes
            ):
                keep = ("reason_code", "shard_id", "sequence_number", "payload_bytes", "payload_sha256", "ts")
                return json.dumps({k: entry.get(k) for k in keep}, default=str).encode()[:max_entry_bytes]


def build_entry(
    *,
    data: bytes,
    reason: str,
    reason_code: str,
    details: object,
    stream: str,
    shard_id: str,
    sequence_number: str,
    partition_key: str | None,
    preview_bytes: int,
    s3=None,
    bucket: str | None = None,
) -> dict:
    """The dead-letter entry of one record (see the module docstring); never raises."""
    entry = {
        "reason": _text(reason),
        "reason_code": _text(reason_code, 100),
        "details": bounded_details(details),
        "stream": stream,
        "shard_id": shard_id,
        "sequence_number": sequence_number,
        "partition_key": partition_key,
        "ts": time.time(),
        **preview(data, preview_bytes),
    }
    if entry["payload_truncated"] and s3 is not None and bucket:
        key = f"dead-letter/{stream}/{shard_id}/{sequence_number}-{entry['payload_sha256'][:16]}"
        try:
            s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentType="application/octet-stream",
                Metadata={"sha256": entry["payload_sha256"], "reason-code": entry["reason_code"]},
            )
            entry["payload_s3_uri"] = f"s3://{bucket}/{key}"
        except Exception as exc:  # the entry still says what the record was (size, SHA-256, preview)
            log.warning(
                "dead letter %s/%s: full payload not stored in s3://%s (%s: %s)",
                shard_id,
                sequence_number,
                bucket,
                type(exc).__name__,
                exc,
            )
            entry["payload_s3_error"] = _text(f"{type(exc).__name__}: {exc}", 300)
    return entry
