"""Environment changes that also drop the cached settings, so `get_settings()` reads them at once."""

from __future__ import annotations

import pytest

from churnops.settings import get_settings


class EnvPatch(pytest.MonkeyPatch):
    """pytest's MonkeyPatch whose environment changes also drop the cached settings (`get_settings`).
    The `monkeypatch` fixture is one (tests/conftest.py); fixtures of a wider scope make their own."""

    def setenv(self, name: str, value: str, prepend: str | None = None) -> None:
        super().setenv(name, value, prepend)
        get_settings.cache_clear()

    def delenv(self, name: str, raising: bool = True) -> None:
        super().delenv(name, raising)
        get_settings.cache_clear()

    def undo(self) -> None:
        super().undo()
        get_settings.cache_clear()
