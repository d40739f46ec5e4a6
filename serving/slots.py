"""A consumer's own folder among those of a shared state folder: `consumer-<n>`, claimed by a file lock.

Consumers started side by side on one machine (a second one beside the stack's, a rolling deploy,
the same CONSUMER_INDEX twice) must never send each other's outbox entries. Each claims the first
`consumer-<n>` (from CONSUMER_INDEX up) whose `consumer-<n>.lock` no running process holds with an
exclusive `flock`; the lock lives as long as the open file (the process, or until `release`). A
consumer that died leaves its folder unclaimed: the next consumer started takes it over, outbox
entries included.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class Slot:
    """The claimed folder `root/consumer-<index>` and the open lock file that holds it."""

    def __init__(self, root: Path, index: int, fd: int):
        self.root, self.index, self._fd = root, index, fd

    @property
    def folder(self) -> Path:
        return self.root / f"consumer-{self.index}"

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.release()


def claim(root: Path, first: int = 0, limit: int = 1024) -> Slot:
    """The first free slot from `first` (wrapping after `limit`); raises OSError when none is free."""
    root.mkdir(parents=True, exist_ok=True)
    for k in range(limit):
        index = (max(0, first) + k) % limit
        fd = os.open(root / f"consumer-{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Slot(root, index, fd)
    raise OSError(f"all {limit} consumer slots under {root} are held")
