"""The layers (docs/architecture-layers.md): the import-linter contracts of pyproject.toml hold, no
project modules import each other in a cycle, and a project module is imported inside a function only
where `[tool.churnops.lazy-imports]` allows it. Every import statement counts, also those inside
functions, so a lazy import cannot hide a dependency."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ops.importcheck import PENDING_CYCLES, cycles, imports_of, lazy_other_imports, lazy_project_imports

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_linter_contracts_hold():
    """`lint-imports` (also in `make lint`): layers, forbidden imports and independent packages."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_import_cycles():
    """No group of project modules imports each other (the pending ones aside, which must still be cycles)."""
    assert {frozenset(c) for c in cycles(ROOT)} == set(PENDING_CYCLES)


def test_project_modules_are_imported_inside_functions_only_where_allowed():
    assert lazy_project_imports(ROOT) == []


def test_other_imports_inside_functions_are_of_the_listed_heavy_packages_only():
    assert lazy_other_imports(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.churnops.lazy-imports]\npackages = ["torch"]\nmodules = ["ops.entry"]\n'
    )
    for rel, text in files.items():
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return tmp_path


def test_the_checks_see_lazy_relative_and_heavy_imports(tmp_path):
    """A cycle closed by an import inside a function is found; a lazy import of a project module is
    refused unless it pulls a heavy package its importer does not, or sits in an allowed module."""
    root = _tree(
        tmp_path,
        {
            "churnops/__init__.py": "",
            "churnops/a.py": "from churnops import b\n",
            "churnops/b.py": "def f():\n    from .a import x\n    return x\n",
            "churnops/heavy.py": "import torch\n",
            "churnops/c.py": "def f():\n    from churnops.heavy import y\n    from churnops.b import f\n    import torch, json\n",
            "ops/__init__.py": "",
            "ops/entry.py": "def train():\n    from churnops.a import main\n",
        },
    )
    assert cycles(root) == [["churnops.a", "churnops.b"]]
    assert lazy_project_imports(root) == [
        "churnops.b:2 imports churnops.a inside a function",
        "churnops.c:3 imports churnops.b inside a function",
    ]
    assert lazy_other_imports(root) == ["churnops.c:4 imports json inside a function"]


def test_imports_under_type_checking_do_not_count():
    found = imports_of(
        "churnops.v", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import churnops.c\n", False
    )
    assert [i.names for i in found] == [("typing", "typing.TYPE_CHECKING")]
