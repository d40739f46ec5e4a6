"""Deployment-file helpers: the compose files, published ports, secret variables, lint binaries, dotenv keys."""

from __future__ import annotations

import re
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.support.paths import ROOT

BIN = Path(sys.executable).parent
COMPOSE_FILES = ("docker-compose-registry.yml", "docker-compose-serve.yml")
SECRET_VARS = ("ADMIN_TOKEN", "GRAFANA_ADMIN_PASSWORD", "POSTGRES_PASSWORD", "MONGO_PASSWORD")
# the ports of ARCHITECTURE.md, published on the host by these services
PUBLISHED = {
    "localstack": 4566,
    "mlflow": 5051,
    "prefect-server": 4200,
    "api": 9696,
    "nginx": 8888,
    "prometheus": 9090,
    "grafana": 3000,
    "mongo": 27017,
}


def tool(name: str) -> str:
    """A lint binary installed by the project's `lint` extra (make test / make lint install it)."""
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if not found:
            pytest.fail(f"{name} is not installed: pip install -e '.[lint]' (make test installs it)")
        return found
    return str(path)


def load_compose(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def console_scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def env_keys(path: Path) -> dict[str, str]:
    """KEY=value lines of a dotenv template (comments skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out
