"""The request id rules shared by every server path (HTTP, batch, stream) and the fast paths."""

from __future__ import annotations

import os
import random

MAX_REQUEST_ID = 128
RESERVED_ID_PREFIXES = ("stream:",)  # log entry ids of the stream consumer: stream:<shard>:<seq>
REQUEST_ID_RULE = (
    f"expected a non-empty string of at most {MAX_REQUEST_ID} characters, valid Unicode, "
    f"not starting with {' or '.join(repr(p) for p in RESERVED_ID_PREFIXES)} (reserved)"
)


def valid_request_id(rid: str) -> bool:
    """Non-blank, at most MAX_REQUEST_ID characters, not a reserved prefix (`stream:` names the
    consumer's log entries), and text UTF-8 can carry: JSON can hold a lone surrogate
    ("\\ud800"), which no log store or JSON encoder downstream accepts."""
    if not rid.strip() or len(rid) > MAX_REQUEST_ID or rid.strip().startswith(RESERVED_ID_PREFIXES):
        return False
    try:
        rid.encode()
    except UnicodeEncodeError:
        return False
    return True


def new_request_id() -> str:
    """A random uuid4 as 32 hex digits, without a getrandom() syscall per request.

    `random` is reseeded in every forked worker by CPython, so workers never share a sequence.
    """
    n = random.getrandbits(128)
    n = (n & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)  # version 4, RFC variant
    return "%032x" % n


def new_request_ids(n: int) -> list[str]:
    """`n` random 128-bit ids as 32 hex digits, from one urandom call (a batch's ids)."""
    h = os.urandom(16 * n).hex()
    return [h[i : i + 32] for i in range(0, 32 * n, 32)]
