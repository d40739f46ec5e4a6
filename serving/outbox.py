"""The consumer's outbox: Kinesis entries `put_records` did not take within its retries, on disk.

Each `add` writes one fsynced JSONL file (`<ns>-<pid>.jsonl`, one `{"stream", "data" (base64),
"key"}` per line) so that the shard's checkpoint can move on without losing the entries and
without emitting the batch again. `drain` sends the files oldest first through a `put` function
that returns the entries still not taken; a file is deleted once all of its entries went out,
rewritten with the rest otherwise. Entries Kinesis rejects for what they are (not for its own
state) are moved to `rejected/` by the caller with `reject`, so they never block the files behind.

Durability: every file is written to a `.tmp`, fsync'ed, renamed over its name, and the folder is
fsync'ed after the rename (and after a delete), so a file survives a crash of the machine once
`add` returns, and a file sent completely does not come back after one.

Delivery is **at-least-once**, not exactly-once: a crash (or a kill) after `put` took entries and
before the file is rewritten or deleted sends those entries again on the next `drain`. Kinesis has
no idempotent put, so nothing here can make it exact; the entries carry their own idempotency key
instead (a result: `shard_id` + `sequence_number` of its input record; a dead letter the same),
byte for byte the same when sent again, so a reader drops repeats by that key.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

Put = Callable[[str, list[dict]], list[dict]]


def _line(stream: str, e: dict) -> str:
    return json.dumps({"stream": stream, "data": base64.b64encode(e["Data"]).decode(), "key": e["PartitionKey"]})


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, lines: list[str]) -> None:
    """Replace `path` with `lines`: tmp file fsync'ed, renamed, then the folder fsync'ed."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("".join(x + "\n" for x in lines))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Outbox:
    def __init__(self, folder: str | Path):
        self.dir = Path(folder)

    def files(self) -> list[Path]:
        """Pending outbox files, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob("*.jsonl"))

    def add(self, stream: str, entries: list[dict]) -> Path:
        """Keep `entries` (put_records entries for `stream`) on disk; raises OSError when it cannot."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{time.time_ns():020d}-{os.getpid()}.jsonl"
        _write(path, [_line(stream, e) for e in entries])
        return path

    def count(self) -> int:
        """Entries waiting in the outbox."""
        n = 0
        for f in self.files():
            try:
                n += sum(1 for line in f.read_text(encoding="utf-8").splitlines() if line.strip())
            except OSError:
                pass
        return n

    def drain(self, put: Put) -> tuple[int, int]:
        """Send pending files in order until one does not go out completely; returns (sent, left).
        At-least-once: a crash between `put` and the rewrite of a file sends its entries again."""
        sent = 0
        for f in self.files():
            try:
                items = [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]
            except (OSError, ValueError) as exc:  # unreadable: keep it aside, never block the others
                log.error("outbox file %s unreadable (%s); moved to %s", f, exc, self.dir / "rejected")
                self._aside(f)
                continue
            by_stream: dict[str, list[dict]] = {}
            for it in items:
                by_stream.setdefault(it["stream"], []).append(
                    {"Data": base64.b64decode(it["data"]), "PartitionKey": it["key"]}
                )
            left: list[str] = []
            for stream, entries in by_stream.items():
                rest = put(stream, entries)
                sent += len(entries) - len(rest)
                left += [_line(stream, e) for e in rest]
            if left:
                _write(f, left)
                return sent, self.count()
            f.unlink()
            _fsync_dir(self.dir)
        return sent, 0

    def reject(self, stream: str, entry: dict, why: str) -> None:
        """Keep an entry Kinesis will never take in `rejected/` (with why), out of the way."""
        d = self.dir / "rejected"
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "rejected.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({**json.loads(_line(stream, entry)), "why": why[:500], "ts": time.time()}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _aside(self, f: Path) -> None:
        d = self.dir / "rejected"
        d.mkdir(parents=True, exist_ok=True)
        os.replace(f, d / f.name)
        _fsync_dir(d)
        _fsync_dir(self.dir)
