"""`make compose-smoke`'s reading of the compose files (interpolation, merge, order, the image's ENV),
and the emulated run itself where this machine allows it (root, network namespaces, PostgreSQL, nginx,
Prometheus)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ops.composerun import (
    ComposeError,
    depends,
    environment_of,
    image_env,
    interpolate,
    load_project,
    start_order,
)
from tests.support.deploy import COMPOSE_FILES, ROOT, SECRET_VARS


def test_interpolation_follows_compose_rules():
    env = {"SET": "v", "EMPTY": "", "W": "w"}
    assert interpolate("a${SET}b $SET $$SET $${SET}", env) == "avb v $SET ${SET}"
    assert interpolate("${EMPTY:-d} ${EMPTY-d} ${UNSET-d} ${UNSET:-d}", env) == "d  d d"
    assert interpolate("${EMPTY:+x}|${SET:+x}|${EMPTY+x}", env) == "|x|x"
    assert interpolate("${UNSET:-${W}:1}", env) == "w:1"  # nested default
    assert interpolate("${SET:?never}", env) == "v"
    for bad in ("${UNSET:?set it}", "${EMPTY:?set it}", "${UNSET?set it}"):
        with pytest.raises(ComposeError, match="set it"):
            interpolate(bad, env)
    assert interpolate("${EMPTY?x}", env) == ""


def secrets_file(tmp_path: Path) -> Path:
    p = tmp_path / "secrets.env"
    p.write_text("".join(f"{v}=s3cret-{v.lower()}\n" for v in SECRET_VARS))
    return p


def test_both_files_merged_with_the_env_files_and_the_shell_winning(tmp_path):
    files = [ROOT / f for f in COMPOSE_FILES]
    services, volumes = load_project(files, [ROOT / ".env.local", secrets_file(tmp_path)], {"N_TRIALS": "3"})
    assert {"localstack", "postgres", "mlflow", "api", "consumer-0", "nginx", "init-aws"} <= set(services)
    assert {"serving-state", "mlflow-data", "reports"} <= set(volumes)
    api = environment_of(services["api"])
    assert api["AWS_ENDPOINT_URL"] == "http://localstack:4566" and api["MLFLOW_TRACKING_URI"] == "http://mlflow:5051"
    assert api["ADMIN_TOKEN"] == "s3cret-admin_token" and api["AWS_ACCESS_KEY_ID"] == "test"
    assert "s3cret-mongo_password@mongo:27017" in api["MONGODB_URI"]
    assert environment_of(services["init-aws"])["N_TRIALS"] == "3"  # the shell beats the env file
    pg = services["postgres"]["healthcheck"]["test"][1]
    assert '"$POSTGRES_PASSWORD"' in pg and "$$" not in pg  # $$ -> $ for the container's shell
    with pytest.raises(ComposeError, match="_PASSWORD is not set"):
        load_project(files, [ROOT / ".env.local"], {})
    cloud, _ = load_project(files, [ROOT / ".env.cloud", secrets_file(tmp_path)], {})
    env = environment_of(cloud["consumer-0"])
    assert env["AWS_ENDPOINT_URL"] == "" and "localstack" not in str(env) and "@mongo:" not in str(env)
    assert env["AWS_ACCESS_KEY_ID"] == ""  # an empty secret stays empty


def test_start_order_puts_every_dependency_first(tmp_path):
    services, _ = load_project(
        [ROOT / f for f in COMPOSE_FILES], [ROOT / ".env.local", secrets_file(tmp_path)], dict(os.environ)
    )
    order = start_order(services, ["api", "simulate-http"])
    for a, b in [("postgres", "mlflow"), ("localstack", "init-aws"), ("init-aws", "api"), ("api", "simulate-http")]:
        assert order.index(a) < order.index(b), (a, b, order)
    assert start_order(services, ["api"], with_deps=False) == ["api"]
    assert depends(services["api"])["init-aws"] == "service_completed_successfully"
    with pytest.raises(ComposeError):
        start_order(services, ["nope"])


def test_the_image_environment_is_the_dockerfile_last_stage():
    env = image_env(ROOT / "Dockerfile")
    assert env["STATE_DIR"] == "/data" and env["REPORTS_DIR"] == "/reports"
    assert env["SERVING_STATE_DIR"] == "/serving" and env["ENV_FILE"] == ""


def can_emulate() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nginx", "prometheus", "psql", "pg_isready", "curl", "runuser"):
        if not shutil.which(tool):
            return f"{tool} not installed (make system-deps)"
    try:
        import psycopg2  # noqa: F401 (MLflow's PostgreSQL backend: the `postgres` extra)
    except ImportError:
        return "psycopg2 not installed (pip install -e '.[postgres]')"
    if not (shutil.which("postgres") or list(Path("/usr/lib/postgresql").glob("*/bin/postgres"))):
        return "PostgreSQL server not installed (make system-deps)"
    return None


@pytest.mark.timeout(900)
@pytest.mark.skipif(can_emulate() is not None, reason=str(can_emulate()))
def test_compose_smoke_runs_the_compose_files_without_docker(real_server):
    """The README's Docker sequence on the compose files' own services, then the smoke checks."""
    out = subprocess.run(
        [sys.executable, "-m", "ops.composerun", "smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-6000:]
    for check in ("PASS API ready", "PASS Kinesis record", "PASS admin reload", "PASS report through nginx"):
        assert check in text, check
    assert "LocalStack -> moto server" in text and "MongoDB is not available here" in text
