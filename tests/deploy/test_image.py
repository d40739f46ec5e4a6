"""The Dockerfile and its build context: sources exist, multi-stage, non-root, no build tools shipped."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import tomllib

from tests.support.deploy import ROOT, tool


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def ignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context (last matching rule wins)."""
    verdict = False
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        neg = rule.startswith("!")
        pat = rule.lstrip("!").rstrip("/")
        if pat == "**" or fnmatch.fnmatch(path, pat) or path.startswith(pat + "/") or fnmatch.fnmatch(path, pat + "/*"):
            verdict = not neg
    return verdict


def test_every_copy_source_exists_and_is_in_the_build_context():
    copies = [args for ins, args in instructions() if ins == "COPY" and "--from=" not in args]
    assert copies
    for args in copies:
        *sources, _dest = args.split()
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: missing"
            assert not ignored(src.rstrip("/")), f"COPY {src}: excluded by .dockerignore"
    # every package the project installs is copied in (setuptools' find: include list)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {s.rstrip("/") for a in copies for s in a.split()[:-1]}
    assert {p.rstrip("*") for p in packages} <= copied


def test_context_leaves_out_state_secrets_and_the_venv():
    for path in (
        ".env.local",
        ".env.cloud",
        ".venv",
        ".stack",
        ".git",
        "tests",
        "bench/results/x.json",
        "churnops/__pycache__/settings.cpython-311.pyc",
    ):
        assert ignored(path), path
    for path in ("pyproject.toml", "churnops/settings.py", "flows/train_flow.py", "serving/index.html"):
        assert not ignored(path), path


def test_multi_stage_non_root_no_build_tools_and_optional_torch():
    ins = instructions()
    stages = [a for i, a in ins if i == "FROM"]
    assert len(stages) >= 2 and stages[-1].endswith("AS runtime")
    final = ins[max(k for k, (i, _) in enumerate(ins) if i == "FROM") :]
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    final_runs = " ".join(a for i, a in final if i == "RUN")
    for tool_name in ("build-essential", "gcc", "g++", "make ", "pip install"):
        assert tool_name not in final_runs, f"{tool_name} in the final stage"
    text = (ROOT / "Dockerfile").read_text()
    assert 'ARG WITH_TORCH=""' in text and 'if [ -n "$WITH_TORCH" ]' in text  # torch only when asked
    assert not re.search(r"torch==[0-9]", text)  # ... at the pin of pyproject.toml's `image` extra, read at build time
    assert "o['image']" in text and "not d.startswith('torch')" in text  # rawpy + tifffile always
    assert "libgomp1=" not in text  # no Debian revision pin
    assert "ARG GIT_COMMIT" in text and "GIT_COMMIT=${GIT_COMMIT}" in text
    assert 'ENV_FILE=""' in text  # no dotenv file in the image: the environment only
    assert "postgres" in text  # MLflow's PostgreSQL driver (the `postgres` extra)
    assert "psycopg2-binary" in str(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["postgres"]
    )


def test_hadolint_passes():
    out = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_passes_on_the_workflows():
    flows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {f.name for f in flows} >= {"ci.yml", "deploy.yml"}
    out = subprocess.run([tool("actionlint"), *map(str, flows)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_workflows_do_what_the_issue_asks():
    import yaml

    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    on = ci.get("on", ci.get(True))  # YAML 1.1 reads the key `on` as True
    assert "push" in on and "pull_request" in on
    assert ci["jobs"]["test"]["needs"] == "lint"
    for job in ci["jobs"].values():
        assert any(
            s.get("uses", "").startswith("actions/cache@") and s["with"]["path"] == ".venv" for s in job["steps"]
        )
    assert any(s.get("run") == "make lint" for s in ci["jobs"]["lint"]["steps"])
    assert any(s.get("run") == "bash .ci/run" for s in ci["jobs"]["test"]["steps"])  # the same script as .ci/run
    assert "make test" in (ROOT / ".ci/run").read_text()
    dep = yaml.safe_load((ROOT / ".github/workflows/deploy.yml").read_text())
    don = dep.get("on", dep.get(True))
    assert don["push"]["branches"] == ["main"] and don["push"]["paths"] == [".env.cloud"]
    assert dep["jobs"]["deploy"]["needs"] == ["changed", "test"]
    text = (ROOT / ".github/workflows/deploy.yml").read_text()
    for secret in ("DEPLOY_HOST", "DEPLOY_SSH_KEY"):
        assert f"secrets.{secret}" in text
    assert "make start-serve env=cloud RUNTIME=docker" in text
    assert "RUN_ID=" in (ROOT / ".env.cloud").read_text()
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert ci_run.index("make lint") < ci_run.index("make test")


def test_deploy_validates_run_id_and_passes_it_as_data():
    import yaml

    text = (ROOT / ".github/workflows/deploy.yml").read_text()
    dep = yaml.safe_load(text)
    assert dep["jobs"]["changed"]["if"] == "github.ref == 'refs/heads/main'"  # manual runs too: main only
    pin = next(s for s in dep["jobs"]["changed"]["steps"] if s.get("id") == "pin")
    assert pin["env"]["BEFORE"] == "${{ github.event.before }}" and "HEAD^" not in text
    assert "[0-9a-f]{32}" in pin["run"]
    remote = next(s for s in dep["jobs"]["deploy"]["steps"] if "ssh " in s.get("run", ""))["run"]
    command = remote[remote.index("ssh ") :]
    assert "${RUN_ID}" not in command and "$RUN_ID" not in command.split("|")[-1]  # data on stdin only
    assert "[0-9a-f]{32}" in remote and "make setup-model-registry env=cloud RUNTIME=docker" in remote


def test_ci_compose_job_runs_the_smoke_check_on_docker():
    import yaml

    job = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())["jobs"]["compose"]
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "$DC config" in runs and "$DC build mlflow" in runs and "$DC up -d --wait" in runs
    assert "python -m ops.composecheck --grafana" in runs
    assert any(s.get("if") == "failure()" and "logs" in s["run"] and "ps" in s["run"] for s in job["steps"])
