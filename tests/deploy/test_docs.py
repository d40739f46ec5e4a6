"""The README and the documentation site (docs/, mkdocs.yml) say only what the code does.

Every shell command shown in a ```bash / ```sh / ```console block of README.md or docs/*.md is
run here (`make -n` under the shipped Makefile and `.env.local`; a module command for real; a
request body against the shipped contract) and names the test that runs it for real
(COVERED_TARGETS, COVERED_PROGRAMS); a command neither knows fails. The site builds with
`mkdocs build --strict` (broken links and anchors fail), the README's links land on pages and
anchors that exist, every `VAR=value` the pages show is a setting or a Makefile variable, and the
generated settings reference is the one the source gives.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(bash|sh|shell|console)\n(.*?)^```", re.S | re.M)

# make target -> the tests that run what the target runs (the target itself is dry-run below)
COVERED_TARGETS: dict[str, list[str]] = {
    "demo": [
        "tests/churnops/test_stack.py::test_repin_after_down_up_reaches_the_servers_under_the_real_supervisor",
        "tests/flows/test_train_flow.py::test_flow_registers_model_with_aliases_and_lineage",
        "tests/churnops/test_quiet.py::test_project_processes_get_no_artifact_progress_bars_nor_mlflow_info_lines",
    ],
    "test": ["tests/deploy/test_image.py::test_workflows_do_what_the_issue_asks"],  # CI's .ci/run runs it
    "test-code": ["tests/conftest.py::pytest_collection_modifyitems"],  # the suite marker it selects
    "lint": [
        "tests/deploy/test_image.py::test_hadolint_passes",
        "tests/deploy/test_image.py::test_actionlint_passes_on_the_workflows",
    ],
    "docs": ["tests/deploy/test_docs.py::test_the_site_builds_strictly_and_the_readme_links_land"],
    "simulate": ["tests/simulators/test_simulators.py::test_run_main_prints_summary"],
    "report": ["tests/reporting/test_report_flow.py::test_report_end_to_end"],
    "status": ["tests/deploy/test_docs.py::test_status_and_down_run_for_real_on_a_stack_of_their_own"],
    "down": [
        "tests/deploy/test_docs.py::test_status_and_down_run_for_real_on_a_stack_of_their_own",
        "tests/churnops/test_stack.py::test_down_waits_until_every_process_has_exited",
    ],
    "init_aws": ["tests/flows/test_model_lines.py::test_readme_commands_register_each_data_set_under_its_own_name"],
    "train": ["tests/flows/test_model_lines.py::test_readme_commands_register_each_data_set_under_its_own_name"],
    "demo-image": ["tests/flows/test_model_lines.py::test_readme_image_command_registers_raw_digits_cnn"],
    # the README's Docker sequence: make compose-smoke runs it word for word (root only; CI's compose job)
    "setup-model-registry": [
        "tests/deploy/test_composerun.py::test_compose_smoke_runs_the_compose_files_without_docker"
    ],
    "apply-model-train-flow": [
        "tests/deploy/test_composerun.py::test_compose_smoke_runs_the_compose_files_without_docker"
    ],
    "setup-model-serve": ["tests/deploy/test_composerun.py::test_compose_smoke_runs_the_compose_files_without_docker"],
    "apply-prediction-reporting": [
        "tests/deploy/test_composerun.py::test_compose_smoke_runs_the_compose_files_without_docker"
    ],
}
# the first word of a command that is not make -> the tests that run it
COVERED_PROGRAMS: dict[str, list[str]] = {
    "curl": [
        "tests/serving/test_app.py::test_predict_bare_and_envelope_and_log",
        "tests/serving/test_oip_server.py::test_the_docs_examples_run_as_written",
        "tests/serving/test_explain_shadow_http.py::test_predict_explain_matches_the_booster",
    ],  # + the body checked below
    "aws": ["tests/serving/test_consumer.py::test_raw_base64_poison_and_resume"],  # base64 payloads, as the CLI sends
    "python": ["tests/data/test_diabetes.py::test_materialised_csv_round_trips"],  # + run below
    ".venv/bin/python": ["tests/conftest.py::pytest_collection_modifyitems"],  # pytest -m: the markers it sets
}
# the python commands the pages show, each run for real by test_the_python_commands_write_what_they_say
PYTHON_RUN = ("python -m churnops.datasets_bundled diabetes ",)
# Makefile variables that are not settings (a `VAR=value` on a command line or in the text)
MAKE_VARS = {"RUNTIME", "env", "VERSION", "REASON", "svc", "IMAGE_DATASET", "IMAGE_MODEL", "DOCKER_SECRETS", "PYTHON"}
# other variables the pages may show being set: read by MLflow, Prefect, the benches, the image build
OTHER_VARS = {
    "MLFLOW_DISABLE_TELEMETRY",
    "DO_NOT_TRACK",
    "PREFECT_SERVER_ANALYTICS_ENABLED",
    "CHURNOPS_STACK_DIR",
    "ENV_FILE",
    "CI",
    "NO_MKDOCS_2_WARNING",
    "WITH_TORCH",
}


def shown_commands() -> list[tuple[str, str]]:
    """(page, command) for every command of every shell block: continuation lines and lines inside an
    open quote joined, comment lines and `$ ` prompts dropped (a console block's other lines are output)."""
    out = []
    for page in PAGES:
        for kind, body in BLOCK.findall(page.read_text()):
            pending = ""
            for line in body.replace("\\\n", " ").splitlines():
                if not pending:
                    line = line.strip()
                    if kind == "console":
                        if not line.startswith("$ "):
                            continue
                        line = line[2:]
                    if not line or line.startswith("#"):
                        continue
                command = f"{pending}\n{line}" if pending else line
                try:
                    shlex.split(command, comments=True)
                except ValueError:  # a quote still open: the command goes on on the next line
                    pending = command
                    continue
                pending = ""
                out.append((page.relative_to(ROOT).as_posix(), command))
            assert not pending, f"{page.name}: a command with an unclosed quote: {pending[:200]}"
    return out


def words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def split_assignments(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Leading `VAR=value` words (the shell's environment for the command) and the rest."""
    env = {}
    while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
        k, v = argv.pop(0).split("=", 1)
        env[k] = v
    return env, argv


def named_test_exists(ref: str) -> bool:
    """`tests/x.py::name`: the file defines a function (test or fixture) of that name."""
    path, _, name = ref.partition("::")
    file = ROOT / path
    if not file.is_file():
        return False
    tree = ast.parse(file.read_text())
    return any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name for n in ast.walk(tree))


def test_pages_show_commands_and_the_parser_reads_them():
    commands = shown_commands()
    assert (
        "README.md",
        "make demo    # bootstraps .venv, starts the embedded stack, ingests data, runs the sweep, registers + pins the best model",
    ) in commands
    assert {p for p, _ in commands} >= {"README.md", "docs/compose.md", "docs/serving.md", "docs/datasets.md"}
    curl = next(c for p, c in commands if c.startswith("curl ") and "/predict " in c)
    assert "-d" in words(curl) and words(curl)[words(curl).index("-d") + 1].startswith('{"customer_age": 45')
    assert split_assignments(["DATASET=x", "DATA=y", "make", "train"]) == (
        {"DATASET": "x", "DATA": "y"},
        ["make", "train"],
    )


def test_every_named_covering_test_exists():
    refs = {r for refs in (*COVERED_TARGETS.values(), *COVERED_PROGRAMS.values()) for r in refs}
    missing = sorted(r for r in refs if not named_test_exists(r))
    assert not missing, f"these covering tests are gone (renamed?): {missing}"


def test_every_make_command_shown_dry_runs_with_the_shipped_files_and_names_its_test():
    env = {k: v for k, v in os.environ.items() if k not in ("ENV", "ENV_FILE", "MAKEFLAGS", "MAKELEVEL", "RUNTIME")}
    seen = set()
    for page, command in shown_commands():
        assignments, argv = split_assignments(words(command))
        if not argv or argv[0] != "make":
            continue
        args = argv[1:]
        targets = [a for a in args if "=" not in a]
        uncovered = [t for t in targets if t not in COVERED_TARGETS]
        assert not uncovered, f"{page}: `{command}`: no test named for make {uncovered} (COVERED_TARGETS)"
        key = (tuple(sorted(assignments.items())), tuple(args))
        if key in seen:
            continue
        seen.add(key)
        out = subprocess.run(
            ["make", "--no-print-directory", "-n", *args],
            cwd=ROOT,
            env={**env, **assignments},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, f"{page}: `{command}` as make -n: {out.stderr[-800:]}"


def test_every_other_command_shown_is_run_here_or_names_its_test():
    for page, command in shown_commands():
        _, argv = split_assignments(words(command))
        if not argv or argv[0] == "make":
            continue
        assert argv[0] in COVERED_PROGRAMS, f"{page}: `{command}`: run it here or name its test (COVERED_PROGRAMS)"
        if argv[0] == "python":  # a module of this project; run below when it is one PYTHON_RUN knows
            assert argv[1] == "-m" and importlib.util.find_spec(argv[2]), f"{page}: `{command}`: no such module"
            assert command.startswith(PYTHON_RUN), f"{page}: `{command}`: run it in a test here"
        if argv[0] == "curl" and "/predict" in command:
            check_predict_body(page, argv)


def check_predict_body(page: str, argv: list[str]) -> None:
    """The body a page sends to /predict is a valid record of the shipped churn contract, whole."""
    from churnops.contract import load_contract
    from churnops.validator import compile_contract

    body = json.loads(argv[argv.index("-d") + 1])
    result = compile_contract(load_contract("bank_churners")).validate(body)
    assert result.ok, f"{page}: the /predict body is refused: {result.errors}"
    assert not result.ignored and len(result.values) == len(body), f"{page}: fields the contract does not know"


def test_the_python_commands_write_what_they_say(tmp_path):
    """`python -m churnops.datasets_bundled diabetes diabetes.csv` (docs/datasets.md): 442 patients."""
    shown = [c for _, c in shown_commands() if c.startswith("python -m churnops.datasets_bundled")]
    assert shown, "docs/datasets.md shows how to materialise the bundled data"
    argv = words(shown[0])
    subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, check=True, capture_output=True, timeout=120)
    lines = (tmp_path / argv[-1]).read_text().splitlines()
    assert len(lines) == 443 and "," in lines[0]  # header + 442 patients


def test_status_and_down_run_for_real_on_a_stack_of_their_own(tmp_path):
    """`make status` and `make down` as shown, with the shipped `.env.local`, on a state folder of
    their own where no stack runs: status says so (and fails), down has nothing to stop."""
    env = {k: v for k, v in os.environ.items() if k not in ("ENV", "ENV_FILE", "MAKEFLAGS", "MAKELEVEL", "RUNTIME")}
    env["STATE_DIR"] = str(tmp_path / "stack")

    def make(target: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", "--no-print-directory", target], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )

    status = make("status")
    assert status.returncode != 0 and "stack not running (make up)" in status.stdout, status.stdout + status.stderr
    down = make("down")
    assert down.returncode == 0 and "stack not running" in down.stdout, down.stdout + down.stderr
    assert not (tmp_path / "stack").exists()  # neither made state


def test_the_docker_sequence_is_the_same_in_the_readme_and_the_compose_page():
    """make compose-smoke runs the README's block; the compose page shows the same one."""

    def block(text: str, after: str) -> str:
        rest = text[text.index(after) :]
        return rest[rest.index("```bash") : rest.index("```", rest.index("```bash") + 3)]

    readme = block((ROOT / "README.md").read_text(), "## With Docker")
    page = block((ROOT / "docs" / "compose.md").read_text(), "# Docker Compose")
    assert readme == page


def test_every_variable_the_pages_set_is_a_setting_or_a_make_variable():
    from churnops.settings import Settings

    settings = {f.upper() for f in Settings.model_fields} | {
        f.validation_alias for f in Settings.model_fields.values() if isinstance(f.validation_alias, str)
    }
    known = settings | MAKE_VARS | OTHER_VARS
    unknown = set()
    for page in PAGES:
        text = page.read_text()
        shown = [m.group(1) for m in re.finditer(r"`([^`\n]+)`", text)] + [c for _, c in shown_commands()]
        for chunk in shown:
            for name in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", chunk):
                if name.isupper() or name in MAKE_VARS:
                    if name not in known and not name.startswith("BENCH_"):
                        unknown.add((page.name, name))
    assert not unknown, f"variables the pages set that nothing reads: {sorted(unknown)}"


def test_the_settings_reference_is_the_generated_one():
    from churnops import settings_doc

    body = settings_doc.PAGE.read_text()
    assert body.split(settings_doc.BEGIN, 1)[1].split(settings_doc.END, 1)[0].strip() == settings_doc.table().strip()
    assert "| `N_TRIALS` | `50` |" in body and "| `API_PORT` | `9696` |" in body
    assert "| `AWS_DEFAULT_REGION` | `us-east-1` |" in body  # a field read under its alias


def test_the_site_builds_strictly_and_the_readme_links_land(tmp_path):
    """`make docs`: mkdocs build --strict (links and anchors between pages); then every README link
    into docs/ names a page of the nav and an anchor that page has."""
    site = tmp_path / "site"
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f": {page.name}" in nav, f"{page.name} is not in mkdocs.yml's nav"
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", readme)
    assert len(links) >= 10, links
    for path, anchor in links:
        assert (ROOT / path).is_file(), f"README links to {path}, which does not exist"
        html = (site / Path(path).relative_to("docs").with_suffix(".html")).read_text()
        if anchor:
            assert f'id="{anchor}"' in html, f"README links to {path}#{anchor}: no such anchor"


@pytest.mark.parametrize("page", ["README.md"])
def test_readme_is_short(page):
    assert len((ROOT / page).read_text().splitlines()) <= 150
