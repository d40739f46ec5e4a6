"""Tripwires on other libraries' code that the project copies, overrides or drives closely: a
hash of each function's source as in the pinned release, so a new release fails loudly."""

from __future__ import annotations

import hashlib
import importlib
import inspect


def source_hash(ref: str) -> str:
    """First 16 hex digits of the SHA-256 of the source of `module:Qual.name`."""
    module, _, path = ref.partition(":")
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, property):
        obj = obj.fget
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def changed(expected: dict[str, str]) -> list[str]:
    """The references of `expected` whose source no longer has the recorded hash."""
    return sorted(ref for ref, digest in expected.items() if source_hash(ref) != digest)
