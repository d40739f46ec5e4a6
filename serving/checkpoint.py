"""Shard checkpoints that belong to one stream: the sequence number plus the stream's identity.

A checkpoint is stored (in the prediction store, as text) as JSON:
`{"seq": "<last processed sequence number>", "stream_arn": "...", "stream_created": <UNIX s>,
"shard_start": "<the shard's starting sequence number>"}`. A stream deleted and created again
under the same name keeps its ARN but not its creation time, and its sequence numbers start
anew: a checkpoint of the old stream must not be used to skip the new one's records.

`fit()` says whether a stored checkpoint may be resumed from on the current stream and shard,
and why not: another stream identity, a sequence number outside the shard's range, or (for a
bare sequence number written before identities were stored) no record at that number in the
shard. A checkpoint that does not fit is discarded: the shard is read from TRIM_HORIZON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class StreamIdentity:
    """What tells one incarnation of a stream from another of the same name."""

    arn: str
    created: float  # StreamCreationTimestamp, UNIX seconds

    @classmethod
    def describe(cls, kin, stream: str) -> "StreamIdentity":
        d = kin.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
        return cls(d["StreamARN"], d["StreamCreationTimestamp"].timestamp())

    def same(self, arn: str | None, created: float | None) -> bool:
        return arn == self.arn and created is not None and abs(float(created) - self.created) < 0.0015


@dataclass(frozen=True)
class Checkpoint:
    seq: str
    stream_arn: str | None = None
    stream_created: float | None = None
    shard_start: str | None = None

    @property
    def has_identity(self) -> bool:
        return self.stream_arn is not None and self.stream_created is not None

    def encode(self) -> str:
        return json.dumps(
            {
                "seq": self.seq,
                "stream_arn": self.stream_arn,
                "stream_created": self.stream_created,
                "shard_start": self.shard_start,
            }
        )

    @classmethod
    def decode(cls, value: str) -> "Checkpoint":
        """A stored value: the JSON above, or a bare sequence number (no identity). Raises ValueError."""
        v = value.strip()
        if not v.startswith("{"):
            if not v.isdigit():
                raise ValueError(f"checkpoint {value[:80]!r} is neither JSON nor a sequence number")
            return cls(v)
        d = json.loads(v)
        seq = str(d.get("seq") or "")
        if not seq.isdigit():
            raise ValueError(f"checkpoint {value[:80]!r} has no sequence number")
        created = d.get("stream_created")
        return cls(seq, d.get("stream_arn"), float(created) if created is not None else None, d.get("shard_start"))


def shard_range(shard: dict) -> tuple[int | None, int | None]:
    """(starting, ending) sequence numbers of a list_shards entry; ending is None while the shard is open."""
    r = shard.get("SequenceNumberRange") or {}
    start, end = r.get("StartingSequenceNumber"), r.get("EndingSequenceNumber")
    return (int(start) if start is not None else None, int(end) if end is not None else None)


def fit(
    ck: Checkpoint, ident: StreamIdentity, shard: dict, kin=None, stream: str | None = None
) -> tuple[str, str] | None:
    """None when `ck` may be resumed from on this stream and shard, else (reason code, why in one line).

    A checkpoint without identity is checked against the shard itself (needs `kin` and `stream`):
    the record at its sequence number must exist. If it was trimmed by retention, TRIM_HORIZON
    begins after it anyway, so discarding it skips nothing.
    """
    if ck.has_identity and not ident.same(ck.stream_arn, ck.stream_created):
        return "stream_identity", (
            f"it belongs to another stream ({ck.stream_arn} created {ck.stream_created}, this one is "
            f"{ident.arn} created {ident.created})"
        )
    start, end = shard_range(shard)
    seq = int(ck.seq)
    if start is not None and seq < start:
        return "out_of_range", f"sequence number {ck.seq} is before the shard's first ({start})"
    if end is not None and seq > end:
        return "out_of_range", f"sequence number {ck.seq} is after the closed shard's last ({end})"
    if not ck.has_identity and kin is not None and stream:
        it = kin.get_shard_iterator(
            StreamName=stream,
            ShardId=shard["ShardId"],
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=ck.seq,
        )["ShardIterator"]
        recs = kin.get_records(ShardIterator=it, Limit=1).get("Records", [])
        if not recs or recs[0]["SequenceNumber"] != ck.seq:
            return "not_in_shard", f"it has no stream identity and the shard holds no record {ck.seq}"
    return None
