"""Makefile: `make help` lists each target once, every target the README and the docs name exists, RUNTIME switches."""

from __future__ import annotations

import os
import re
import stat
import subprocess

import pytest

from tests.support.deploy import ROOT, SECRET_VARS

SWITCHED = (
    "up",
    "down",
    "status",
    "logs",
    "setup-model-registry",
    "setup-model-serve",
    "start-serve",
    "stop-serve",
    "init_aws",
    "apply-model-train-flow",
    "apply-prediction-reporting",
    "simulate",
    "report",
    "reset_all",
)


def make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MAKEFLAGS": "", **(env or {})},
    )


@pytest.fixture(scope="module")
def help_targets() -> list[str]:
    out = make("help")
    assert out.returncode == 0, out.stderr
    return [line.split()[0] for line in out.stdout.splitlines() if line.startswith("  ")]


def test_help_lists_each_target_once_with_one_line(help_targets):
    dupes = sorted({t for t in help_targets if help_targets.count(t) > 1})
    assert not dupes, f"listed twice: {dupes}"
    assert set(SWITCHED) | {"demo", "test", "lint", "train", "pin", "help"} <= set(help_targets)


def test_every_target_the_readme_names_is_listed_and_exists(help_targets):
    """The README and every page of docs/: each `make <target>` (and the targets after it, as in
    `make init_aws train` or `make apply-model-train-flow apply-prediction-reporting DATASET=…`)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = set()
    for page in pages:
        text = page.read_text()
        blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M)
        code = re.findall(r"`([^`\n]+)`", text) + [ln.split("#")[0] for b in blocks for ln in b.splitlines()]
        for chunk in code:
            for run in re.findall(r"(?:^|[\s;(])make ((?:[a-z][a-z_-]*[a-z])(?: [a-z][a-z_-]*[a-z](?=\s|$))*)", chunk):
                named.update(run.split())
    assert {
        "demo",
        "test",
        "docs",
        "setup-model-registry",
        "init_aws",
        "apply-model-train-flow",
        "setup-model-serve",
        "apply-prediction-reporting",
        "bench-servers",
        "promote",
    } <= named
    missing = sorted(named - set(help_targets))
    assert not missing, f"README or docs/ name targets make help does not list: {missing}"
    for target in sorted(named):
        out = make("-n", target)
        assert out.returncode == 0, f"make -n {target}: {out.stderr}"


def test_runtime_docker_runs_the_compose_files(help_targets):
    compose = (
        "docker compose -p churnops --env-file .env.local --env-file .stack/docker/secrets.env "
        "-f docker-compose-registry.yml -f docker-compose-serve.yml"
    )
    for target in SWITCHED:
        out = make("-n", target, "RUNTIME=docker")
        assert out.returncode == 0, f"make -n {target} RUNTIME=docker: {out.stderr}"
        assert compose in out.stdout, target
        assert "churnops-stack" not in out.stdout, target
        embedded = make("-n", target)
        assert embedded.returncode == 0 and "docker compose" not in embedded.stdout, target
    cloud = make("-n", "start-serve", "RUNTIME=docker", "env=cloud")
    assert "--env-file .env.cloud" in cloud.stdout and "--force-recreate" in cloud.stdout
    assert "run --rm init-aws" in make("-n", "init_aws", "RUNTIME=docker").stdout
    bad = make("-n", "up", "RUNTIME=kubernetes")
    assert bad.returncode != 0 and "RUNTIME must be embedded or docker" in bad.stderr


def fake_docker(tmp_path) -> dict:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    docker = bindir / "docker"
    docker.write_text("#!/bin/sh\nexit 0\n")
    docker.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    return {**env, "PATH": f"{bindir}:{os.environ['PATH']}"}


def test_cloud_refuses_to_start_without_secrets(tmp_path):
    env = fake_docker(tmp_path)
    secrets = tmp_path / "s" / "secrets.env"
    out = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "docker-env", "env=cloud", f"DOCKER_SECRETS={secrets}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode != 0
    for v in SECRET_VARS:
        assert v in out.stderr
    assert not secrets.exists()
    env.update({v: "from-the-secret-store" for v in SECRET_VARS})
    ok = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "docker-env", "env=cloud", f"DOCKER_SECRETS={secrets}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert secrets.read_text() == ""  # cloud values stay in the environment, never on disk


def test_local_secrets_are_generated_once_private_and_kept(tmp_path):
    env = fake_docker(tmp_path)
    secrets = tmp_path / "s" / "secrets.env"
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), "docker-env", f"DOCKER_SECRETS={secrets}"]
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env).returncode == 0
    first = secrets.read_text()
    values = dict(line.split("=", 1) for line in first.splitlines())
    assert sorted(values) == sorted(SECRET_VARS)
    assert all(re.fullmatch(r"[0-9a-f]{48}", v) for v in values.values()) and len(set(values.values())) == 4
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env).returncode == 0
    assert secrets.read_text() == first  # the volumes were initialised with them: never rotated silently


def test_docker_runtime_without_docker_says_so(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("bash", "sh", "make", "grep", "awk"):
        src = next((p for p in (f"/usr/bin/{name}", f"/bin/{name}") if os.path.exists(p)), None)
        if src:
            (bindir / name).symlink_to(src)
    out = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "docker-env"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(bindir), "HOME": str(tmp_path)},
    )
    assert out.returncode != 0 and "RUNTIME=docker needs docker" in out.stderr


def test_stop_and_status_targets_make_the_secrets_first_under_docker():
    """After reset_all (no secrets file) the compose files' `${VAR:?}` would stop down/status/logs/stop-serve."""
    for target in ("down", "status", "logs", "stop-serve"):
        out = make("-n", target, "RUNTIME=docker")
        assert out.returncode == 0, out.stderr
        assert out.stdout.index("/dev/urandom") < out.stdout.index("docker compose"), target
        assert "docker compose" not in make("-n", target).stdout


def test_docker_demo_starts_everything_with_dependencies_and_trains_without_the_host_venv():
    out = make("-n", "demo", "RUNTIME=docker")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "-m venv" not in text and "pip install" not in text
    assert "run --rm prefect-worker churnops-train" in text
    ups = [ln for ln in text.splitlines() if "docker compose" in ln and " up " in ln]
    assert ups and not any("--no-deps" in ln for ln in ups), ups
    assert any("grafana nginx" in ln for ln in ups)  # the serving side, every service
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## With Docker") :][:3000]
    assert block.index("init_aws") < block.index("make train RUNTIME=docker") < block.index("make setup-model-serve"), (
        block[:600]
    )
