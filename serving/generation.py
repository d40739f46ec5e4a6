"""The reload generation: one counter shared by every process of a state folder.

Each gunicorn worker (and the consumer) reloads on its own; the one that took `POST /model/reload`
publishes its target in `<state_dir>/serving-model.json` and the others follow a higher generation.
A generation computed per process (`max(mine, the file's) + 1`) let two concurrent reloads on two
workers both become generation 1: each installed its own model and neither followed the other.

`next_generation` hands out numbers under an exclusive `flock` of `<state_dir>/serving-model.lock`
from `<state_dir>/serving-generation`, so no two reloads share one, and `publish` writes the state
file under the same lock only when no higher generation is there already: the newest reload wins
everywhere, whichever finishes loading first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

COUNTER_FILE = "serving-generation"
LOCK_FILE = "serving-model.lock"


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """An exclusive lock over the folder's generation counter and state file (all processes)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def next_generation(folder: Path, state_file: Path, floor: int = 0) -> int:
    """A generation no other reload of this folder has: above the counter, the state file's and `floor`."""
    with locked(folder):
        counter = folder / COUNTER_FILE
        try:
            last = int(counter.read_text().strip() or 0)
        except (OSError, ValueError):
            last = 0
        published = int((read_json(state_file) or {}).get("generation", 0))
        gen = max(last, published, floor) + 1
        tmp = counter.with_name(f".{COUNTER_FILE}.{os.getpid()}")
        tmp.write_text(str(gen))
        os.replace(tmp, counter)
        return gen


def publish(folder: Path, state_file: Path, state: dict, install) -> dict | None:
    """Under the lock: when the state file holds no higher generation than `state`'s, call `install()`
    and write `state` (atomically); returns None then, else the newer state that superseded it."""
    with locked(folder):
        current = read_json(state_file)
        if current and int(current.get("generation", 0)) > int(state["generation"]):
            return current
        install()
        state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_file.with_name(f".{state_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, state_file)
        return None
