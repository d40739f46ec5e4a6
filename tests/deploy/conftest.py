"""Deployment files (compose, Dockerfile, workflows, Makefile): validated here, never run (no Docker engine)."""

from __future__ import annotations

import pytest

from tests.support.deploy import COMPOSE_FILES, load_compose


@pytest.fixture(scope="session")
def compose() -> dict[str, dict]:
    """Both files' services merged as `docker compose -f registry -f serve` merges them (no name clash)."""
    services: dict[str, dict] = {}
    for name in COMPOSE_FILES:
        for svc, spec in load_compose(name)["services"].items():
            assert svc not in services, f"service {svc} defined in both compose files"
            services[svc] = {**spec, "_file": name}
    return services
