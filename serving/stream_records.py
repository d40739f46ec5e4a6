"""A stream record's payload and arrival time, and the model failure that stops a batch: shared by the
tabular consumer (`serving.consumer`) and its image path (`serving.image_stream`)."""

from __future__ import annotations

import base64
import binascii

from serving.inference import BadInput, parse_json


class ModelFailure(RuntimeError):
    """The model cannot predict even the contract's example: not the records' fault."""


def decode_payload(data: bytes) -> object:
    """Raw JSON, or base64-encoded JSON (what `aws kinesis put-record --data <base64>` leaves with CLI v1)."""
    try:
        return parse_json(data)
    except BadInput as first:
        try:
            raw = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise first from None
        if not raw.strip():
            raise first from None
        return parse_json(raw)


def arrival(rec: dict, default: float) -> float:
    """The record's arrival time on the stream (UNIX seconds): a batch re-emitted after a crash logs
    the same `ts` as the first time, so readers see one record in every time window."""
    t = rec.get("ApproximateArrivalTimestamp")
    try:
        return float(t.timestamp()) if t is not None else default
    except (AttributeError, TypeError, ValueError, OverflowError):
        return default
