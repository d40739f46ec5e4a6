"""`make pin`, `make rollback`, `make promote`: the registry's command lines (console scripts
churnops-pin, churnops-rollback, churnops-promote)."""

from __future__ import annotations

import os
from collections.abc import Callable

from churnops.approvals import sweep_quietly
from churnops.cli import fail, setup_logging
from churnops.governance import promote, rollback
from churnops.model_line import resolved
from churnops.registry import CHAMPION, alias_version, pin_champion, write_env_value
from churnops.settings import Settings, env_file, get_settings


def pin_main() -> None:
    """`make pin`: write the champion's RUN_ID into the dotenv file."""
    setup_logging()
    try:
        run_id = pin_champion()
    except Exception as exc:
        fail(exc, "make pin")
    print(f"pinned RUN_ID={run_id} in {env_file()}")


def _reason_version() -> tuple[str, str | None]:
    reason = (os.environ.get("REASON") or "").strip()
    version = (os.environ.get("VERSION") or "").strip() or None
    return reason, version


def _move_champion(command: str, move: Callable[[Settings, str, str | None], tuple[str | None, str]]) -> None:
    """`make rollback` / `make promote`: `move(settings, reason, version)` -> (old, new) versions;
    then re-pin RUN_ID to the new champion's run and say so (or fail naming `command`)."""
    setup_logging()
    s = resolved(get_settings())
    reason, version = _reason_version()
    try:
        old, new = move(s, reason, version)
        mv = alias_version(s.model_name, CHAMPION, s)
        write_env_value(env_file(), "RUN_ID", mv.run_id)
    except Exception as exc:
        fail(exc, command)
    print(
        f"champion {s.model_name}: v{old} -> v{new}; pinned RUN_ID={mv.run_id} "
        f"(servers on @champion follow by themselves; pinned servers: make start-serve)"
    )


def rollback_main() -> None:
    """`make rollback [VERSION=n] REASON="..."`: move champion back, re-pin RUN_ID."""

    def move(s: Settings, reason: str, version: str | None) -> tuple[str | None, str]:
        if not reason:
            raise ValueError('REASON is required: make rollback [VERSION=n] REASON="why"')
        return rollback(reason, version, s)

    _move_champion("make rollback", move)


def promote_main() -> None:
    """`make promote VERSION=n REASON="..."`: make version n the champion, re-pin RUN_ID."""

    def move(s: Settings, reason: str, version: str | None) -> tuple[str | None, str]:
        if not reason or not version:
            raise ValueError('VERSION and REASON are required: make promote VERSION=n REASON="why"')
        for ended in sweep_quietly(s):  # challengers whose approval run was cancelled or timed out
            print(f"{ended['model']} v{ended['version']}: {ended['outcome']} ({ended['reason']})")
        return promote(str(version), reason, s), version

    _move_champion("make promote", move)
