"""The consumer's outbox on disk: durable renames, and at-least-once delivery across a crash."""

from __future__ import annotations

import json
import os
import stat

import pytest

import serving.outbox as outbox_module
from serving.outbox import Outbox


def entries(n: int, shard: str = "shardId-000000000000") -> list[dict]:
    """Result entries as the consumer builds them: each carries its input's shard and sequence number."""
    return [
        {
            "Data": json.dumps({"request_id": f"r{i}", "shard_id": shard, "sequence_number": str(100 + i)}).encode(),
            "PartitionKey": f"r{i}",
        }
        for i in range(n)
    ]


@pytest.fixture
def fsyncs(monkeypatch) -> list[str]:
    """Every os.fsync, as "file" or "dir"."""
    seen: list[str] = []
    real = os.fsync

    def fsync(fd):
        seen.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def test_the_folder_is_fsynced_after_each_rename_and_delete(tmp_path, fsyncs):
    """add: the file, then the folder (after os.replace); a partial drain rewrites the file and syncs
    the folder; a file sent completely is deleted and the folder synced (it never comes back)."""
    box = Outbox(tmp_path / "outbox")
    box.add("results", entries(4))
    assert fsyncs == ["file", "dir"]
    fsyncs.clear()
    assert box.drain(lambda stream, es: es[2:]) == (2, 2)  # two taken, two left: the file is rewritten
    assert fsyncs == ["file", "dir"]
    fsyncs.clear()
    assert box.drain(lambda stream, es: []) == (2, 0) and box.files() == []
    assert fsyncs == ["dir"]


class Crash(BaseException):
    """The process dies here (nothing after it runs)."""


def test_a_crash_between_put_and_the_rewrite_sends_again_at_least_once(tmp_path):
    """Documented at-least-once: put takes the entries, the process dies before the outbox file is
    rewritten; the next drain (a restarted consumer) sends them again, byte for byte, so a reader
    dropping repeats by (shard_id, sequence_number) sees each result once, and none is lost."""
    box = Outbox(tmp_path / "outbox")
    sent: list[dict] = []
    box.add("results", entries(5))

    def put_then_die(stream, es):
        sent.extend(es)
        raise Crash

    with pytest.raises(Crash):
        box.drain(put_then_die)
    assert box.count() == 5  # the file is as it was

    def put(stream, es):
        sent.extend(es)
        return []

    assert Outbox(tmp_path / "outbox").drain(put) == (5, 0)
    assert len(sent) == 10  # each entry twice
    keys = [(json.loads(e["Data"])["shard_id"], json.loads(e["Data"])["sequence_number"]) for e in sent]
    assert len(set(keys)) == 5 and sent[:5] == sent[5:]
    assert "at-least-once" in outbox_module.__doc__
