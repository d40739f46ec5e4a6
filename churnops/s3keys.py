"""S3 keys that come from input (stream records, manifests, DATA=s3://...) are checked before use.

A key with a `..` or `.` segment, an empty segment (`a//b`), a leading `/`, a backslash or a control
character is refused: S3 itself treats such keys as plain names, but the same keys become local
paths (a downloaded data set), and moto/LocalStack, proxies and other S3 implementations normalise
them differently, so `images/../secrets` might name another object than the one that was allowed.
"""

from __future__ import annotations

MAX_KEY_BYTES = 1024  # S3's own limit


class UnsafeKeyError(ValueError):
    """The key cannot be used; the message names what is wrong with it."""


def check_key(key: str, what: str = "key") -> str:
    """`key` when it is a safe relative S3 key; UnsafeKeyError naming the problem otherwise."""
    if not isinstance(key, str) or not key:
        raise UnsafeKeyError(f"{what} is empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise UnsafeKeyError(f"{what} is longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise UnsafeKeyError(f"{what} {key[:200]!r} starts with '/': expected a relative key")
    if "\\" in key or any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise UnsafeKeyError(f"{what} {key[:200]!r} contains a backslash or a control character")
    for seg in key.split("/"):
        if seg in ("", ".", ".."):
            raise UnsafeKeyError(
                f"{what} {key[:200]!r} has a {seg or 'empty'!r} segment: "
                "expected segments that are not empty, '.' or '..'"
            )
    return key


def split_s3_uri(uri: str, what: str = "uri") -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`, the key checked; UnsafeKeyError otherwise."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise UnsafeKeyError(f"{what}: expected s3://<bucket>/<key>")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise UnsafeKeyError(f"{what} {uri[:200]!r}: expected s3://<bucket>/<key>")
    return bucket, check_key(key, f"{what} key")
