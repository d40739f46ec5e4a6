"""The admin token of the servers (`POST /model/reload`): set, or generated once per state folder.

`ADMIN_TOKEN` wins when set. Without it (env=local) a random token is generated on first use
and kept in `<state_dir>/admin_token` (mode 0600), so every worker and `make up` agree on it.
The token the project once shipped as a default, and an empty one, never work: in env=cloud
they stop the server with an error; in env=local the old default is ignored (with a warning).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import time
from pathlib import Path

from churnops.settings import Settings

log = logging.getLogger(__name__)

OLD_DEFAULT = "change-me-local-admin"
TOKEN_FILE = "admin_token"
MIN_CLOUD_LENGTH = 16


class AdminTokenError(ValueError):
    """The configured admin token cannot be used."""


def token_path(s: Settings) -> Path:
    return s.state_dir / TOKEN_FILE


def _read_or_create(path: Path) -> str:
    """The token in `path`, creating it (0600, exclusive: racing workers read the winner's) when absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process created it an instant ago and may still be writing
            token = path.read_text().strip()
            if token:
                return token
            time.sleep(0.02)
        raise AdminTokenError(f"{path} is empty: delete it to generate a new admin token") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    log.info("generated an admin token in %s", path)
    return token


def admin_token(s: Settings) -> str:
    """The token admin requests must present; raises `AdminTokenError` when the settings are unsafe."""
    configured = (s.admin_token or "").strip()
    if s.env == "cloud":
        if not configured or configured == OLD_DEFAULT or len(configured) < MIN_CLOUD_LENGTH:
            raise AdminTokenError(
                "ADMIN_TOKEN must be set in env=cloud to a secret of at least "
                f"{MIN_CLOUD_LENGTH} characters (not empty, not the old default {OLD_DEFAULT!r}); "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return configured
    if configured and configured != OLD_DEFAULT:
        return configured
    if configured == OLD_DEFAULT:
        log.warning(
            "ADMIN_TOKEN=%s is the old published default and is ignored; the admin token is in %s",
            OLD_DEFAULT,
            token_path(s),
        )
    return _read_or_create(token_path(s))


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison; an empty token never matches."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())
