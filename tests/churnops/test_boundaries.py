"""Package boundaries: `serving` and `reporting` never import each other, and the core's monitoring
and store packages import neither (nor the flows). Checked on the source with `ast`, every import
statement counted (also those inside functions), so a lazy import cannot hide a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "serving": ("reporting",),
    "reporting": ("serving",),
    "churnops/monitoring": ("serving", "reporting", "flows"),
    "churnops/store": ("serving", "reporting", "flows"),
}


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, a module of `package`."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the module's own package
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base:
                out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}" if base else a.name) for a in node.names]
    return out


def violations(root: Path, folder: str, forbidden: tuple[str, ...]) -> list[str]:
    """`file:line imports module` for each import of a forbidden top-level package under `folder`."""
    found = []
    for path in sorted((root / folder).rglob("*.py")):
        package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
        for line, name in imported_modules(path.read_text(), package):
            if name.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(root)}:{line} imports {name}")
    return sorted(set(found))


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_package_does_not_import_its_neighbours(folder):
    assert (ROOT / folder).is_dir()
    assert violations(ROOT, folder, FORBIDDEN[folder]) == []


def test_the_check_sees_every_kind_of_import(tmp_path):
    """The parser finds plain, from-, lazy (in a function) and relative imports."""
    pkg = tmp_path / "serving"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "import os\n"
        "import reporting.report\n"
        "from reporting import trigger\n"
        "def f():\n"
        "    from reporting.drift import psi\n"
        "    return psi\n"
        "from . import b\n"
        "from .. import reporting as r\n"
    )
    assert violations(tmp_path, "serving", ("reporting",)) == [
        "serving/a.py:2 imports reporting.report",
        "serving/a.py:3 imports reporting",
        "serving/a.py:3 imports reporting.trigger",
        "serving/a.py:5 imports reporting.drift",
        "serving/a.py:5 imports reporting.drift.psi",
        "serving/a.py:8 imports reporting",
    ]
