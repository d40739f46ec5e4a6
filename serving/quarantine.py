"""The prediction log's quarantine: records a store refused for what they are, kept for a person.

    python -m serving.quarantine        # make replay-quarantine: offer them to the store again

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

import fcntl
import json
import logging
import os
import sys
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

    def _rewrite(self, path: Path, lines: list[str]) -> None:
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

    def replay(self, plog) -> ReplayResult:
        """Offer every quarantined record to `plog`'s store again (see the module docstring)."""
        from serving.prediction_log import StoreUnavailable, parse_line, quarantine_line

        res = ReplayResult()
        for path in self.files():
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # another replay is on it
                keep: list[str] = []
                items: list[tuple] = []
                for raw in path.read_text(encoding="utf-8", errors="backslashreplace").splitlines():
                    if not raw.strip():
                        continue
                    item = parse_line(raw)
                    if item is None:
                        keep.append(raw + "\n")
                    else:
                        items.append(item)
                refused: list = []
                try:
                    for i in range(0, len(items), plog.batch_size):
                        refused += plog.offer(items[i : i + plog.batch_size])
                except StoreUnavailable as exc:  # this file stays as it is (a replay is idempotent)
                    res.store_error = f"{type(exc.__cause__ or exc).__name__}: {exc}"
                    res.kept += len(keep) + len(items)
                    break
                keep += [quarantine_line(kind, rec, why) for (kind, rec, *_), why in refused]
                self._rewrite(path, keep)
                res.files += 1
                res.replayed += len(items) - len(refused)
                res.kept += len(keep)
            finally:
                os.close(fd)
        self.usage()
        return res


def main() -> None:
    """`make replay-quarantine`: offer the quarantined records to the configured store again."""
    from churnops.cli import setup_logging
    from churnops.redact import redact
    from churnops.settings import get_settings
    from churnops.store.factory import open_store
    from serving.prediction_log import PredictionLog

    setup_logging()
    s = get_settings()
    store = open_store(s)
    plog = PredictionLog(
        store, s.state_path(s.spool_dir, "spool"), s.log_batch_size, journal=False, quarantine_max_bytes=1 << 62
    )
    try:
        res = plog.quarantine.replay(plog)
    finally:
        store.close()
    print(
        json.dumps(
            {
                "quarantine": str(plog.quarantine.dir),
                "files": res.files,
                "replayed": res.replayed,
                "kept": res.kept,
                "store_error": redact(res.store_error),
            }
        )
    )
    if res.store_error:
        print(f"store unavailable ({redact(res.store_error)}): nothing more replayed; retry later", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
