"""The prediction log's quarantine: records a store refused for what they are, kept for a person.

    python -m ops.replay_quarantine     # make replay-quarantine: offer them to the store again

Only an error that one record provably causes (the store's `is_record_error`: too large, cannot
be encoded, a duplicate key or a constraint of that record) puts a record here; a store that is
down, full, locked, corrupt or refuses the credentials never does (the log spools and retries).

Files: `<spool>/quarantine/<ns>-<pid>-<n>.jsonl`, one JSON line per record
(`{"kind", "record", "error"}`; a spool line that could not be read back is `{"line", "error"}`),
mode 0600 in a 0700 folder, written with one `os.write` loop, fsync'ed, and the folder fsync'ed
after a file appears, is rewritten or goes. Bounded: at most `max_bytes` in the folder (its own
cap, and counted in the spool's total `SPOOL_MAX_BYTES`); a record beyond it is dropped and counted
by the caller.

`replay` offers every quarantined record to the store again (through `PredictionLog.offer`, which
isolates what the store still refuses): accepted records leave the quarantine, refused ones stay
with the new reason, lines that cannot be parsed stay as they are. It stops at the first sign of
an unavailable store and leaves the file it was on untouched.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700


def fsync_dir(d: Path) -> None:
    """fsync a folder (a file created, renamed or deleted in it survives a crash of the machine)."""
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass
class ReplayResult:
    """What `Quarantine.replay` did: records the store took, records kept, and why it stopped early."""

    replayed: int = 0
    kept: int = 0
    files: int = 0
    store_error: str = ""


class Quarantine:
    """The quarantine folder of one spool folder (any number of processes may share it)."""

    def __init__(self, folder: str | Path, max_bytes: int = 128 << 20):
        self.dir = Path(folder)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._seq = 0
        self._bytes: int | None = None  # this process's view; rescanned by `usage`

    def files(self) -> list[Path]:
        """Quarantine files, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob("*.jsonl"))

    def usage(self) -> tuple[int, int]:
        """(files, bytes) in the folder now."""
        n = total = 0
        for p in self.files():
            try:
                total += p.stat().st_size
                n += 1
            except OSError:
                pass
        with self._lock:
            self._bytes = total
        return n, total

    def used(self) -> int:
        """Bytes in the folder (rescanned when this process has not looked yet)."""
        if self._bytes is None:
            return self.usage()[1]
        return self._bytes

    def _mkdir(self) -> None:
        if not self.dir.is_dir():
            self.dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            fsync_dir(self.dir.parent)
        os.chmod(self.dir, DIR_MODE)

    def add(self, lines: list[str], room: int | None = None) -> tuple[int, int]:
        """Write the first of `lines` (JSON lines, newline-terminated) that fit under the cap (and in
        `room` bytes, when given) as one new 0600 file, fsync'ed with its folder. Returns (lines
        written, bytes); the caller drops and counts the rest. Raises OSError when it cannot write."""
        used = self.used()
        free = self.max_bytes - used if room is None else min(self.max_bytes - used, room)
        chunks: list[bytes] = []
        size = 0
        for line in lines:
            b = line.encode("utf-8", "backslashreplace")
            if size + len(b) > free:
                break
            chunks.append(b)
            size += len(b)
        if not chunks:
            return 0, 0
        self._mkdir()
        with self._lock:
            self._seq += 1
            seq = self._seq
        path = self.dir / f"{time.time_ns():020d}-{os.getpid()}-{seq}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            write_all(fd, b"".join(chunks))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            try:
                path.unlink()
            except OSError:
                pass
            raise
        os.close(fd)
        fsync_dir(self.dir)
        with self._lock:
            self._bytes = (self._bytes or 0) + size
        return len(chunks), size

    def rewrite(self, path: Path, lines: list[str]) -> None:
        """Replace `path` with `lines` (atomically, 0600, fsync'ed), or delete it when none is left."""
        if not lines:
            path.unlink()
        else:
            tmp = path.with_name(path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            try:
                write_all(fd, "".join(lines).encode("utf-8", "backslashreplace"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        fsync_dir(self.dir)
