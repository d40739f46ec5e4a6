"""Hide secrets that travel inside URLs before a URL (or a message quoting one) is shown.

Every answer and log line that shows a URL goes through `redact`: `user:password@` becomes
`***@`, the values of secret-looking query parameters become `***`, and with `path=True` (a
webhook URL, whose path is the secret) everything after the host is hidden.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://[userinfo@]host[:port][/path][?query][#fragment], stopping at whitespace and quotes
_URL = re.compile(r"""(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>[^\s'"<>`]+)""")
_SECRET_KEYS = re.compile(
    r"(token|secret|passw|pwd|key|sig|signature|credential|auth|session|code|x-amz-security-token)", re.I
)


def _query(query: str) -> str:
    parts = []
    for item in query.split("&"):
        name, eq, _value = item.partition("=")
        parts.append(f"{name}={MASK}" if eq and _SECRET_KEYS.search(name) else item)
    return "&".join(parts)


def _one(match: re.Match, path: bool) -> str:
    scheme, rest = match.group("scheme"), match.group("rest")
    cut = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if i != -1:
            cut = min(cut, i)
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        authority = f"{MASK}@{authority.rsplit('@', 1)[1]}"
    if path:
        return f"{scheme}{authority}/{MASK}" if tail.strip("/") else f"{scheme}{authority}{tail}"
    if "?" in tail:
        head, _, query = tail.partition("?")
        query, hash_, frag = query.partition("#")
        tail = f"{head}?{_query(query)}{hash_}{frag}"
    return f"{scheme}{authority}{tail}"


def redact(text: object, path: bool = False) -> str:
    """`text` (a URL or any message) with the secrets of every URL in it replaced by `***`.

    `path=True` also hides each URL's path, query and fragment (webhook URLs carry their token
    in the path). None gives "".
    """
    if text is None:
        return ""
    return _URL.sub(lambda m: _one(m, path), str(text))
