"""The import rules `lint-imports` does not check: no import cycles among the project's modules, and
no import inside a function unless `[tool.churnops.lazy-imports]` (pyproject.toml) allows it.

    python -m ops.importcheck        # make lint; exit 1 and one line per problem

Every import statement is read from the source (those inside functions included, those under
`if TYPE_CHECKING:` left out: they never run), as import-linter reads them.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from churnops.settings import PROJECT_ROOT

PACKAGES = ("churnops", "serving", "reporting", "flows", "simulators", "ops")
# cycles another change removes: each must still be a cycle (else delete it here), none may grow
PENDING_CYCLES: tuple[frozenset[str], ...] = ()  # none left (serving/loading.py ended the last one)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    line: int
    names: tuple[str, ...]  # the dotted names the statement names (`from a import b` -> a, a.b)
    in_function: bool


@dataclass(frozen=True)
class Rules:
    packages: frozenset[str]  # third-party packages that may be imported inside a function
    modules: frozenset[str]  # project modules whose imports may all sit inside functions


def rules(root: Path = PROJECT_ROOT) -> Rules:
    """`[tool.churnops.lazy-imports]` of pyproject.toml."""
    cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["churnops"]["lazy-imports"]
    return Rules(frozenset(cfg["packages"]), frozenset(cfg["modules"]))


def project_files(root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """Every module of the project's packages and its file."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _typing_only(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            t = node.test
            if (t.id if isinstance(t, ast.Name) else getattr(t, "attr", "")) == "TYPE_CHECKING":
                out |= {id(n) for b in node.body for n in ast.walk(b)}
    return out


def imports_of(module: str, source: str, is_package: bool) -> list[Import]:
    """Every import statement of one module (relative ones made absolute)."""
    tree = ast.parse(source)
    skip = _typing_only(tree)
    inner = {
        id(n)
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(fn)
        if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = tuple(a.name for a in node.names)
        else:
            base = node.module or ""
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            names = (base, *(f"{base}.{a.name}" for a in node.names))
        out.append(Import(module, node.lineno, names, id(node) in inner))
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def scan(root: Path = PROJECT_ROOT) -> tuple[dict[str, Path], list[Import]]:
    known = project_files(root)
    found: list[Import] = []
    for mod, f in known.items():
        found += imports_of(mod, f.read_text(), f.name == "__init__.py")
    return known, found


def targets_of(imp: Import, known: dict[str, Path]) -> set[str]:
    """The project modules one statement imports (`from pkg import mod` names pkg.mod, not pkg)."""
    hits = {t for n in imp.names if (t := _resolve(n, known)) and t != imp.module}
    base = _resolve(imp.names[0], known)
    if len(hits) > 1 and base in hits and any(t != base and t.startswith(base + ".") for t in hits):
        hits.discard(base)
    return hits


def edges(root: Path = PROJECT_ROOT) -> dict[str, set[str]]:
    """Per project module: the project modules it imports (inside functions too)."""
    known, found = scan(root)
    out: dict[str, set[str]] = {m: set() for m in known}
    for imp in found:
        out[imp.module] |= targets_of(imp, known)
    return out


def cycles(root: Path = PROJECT_ROOT) -> list[list[str]]:
    """Groups of project modules that import each other (strongly connected, more than one module)."""
    return strongly_connected(edges(root))


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of more than one node that reach each other (Tarjan, iterative), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    group = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        group.append(w)
                        if w == v:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return sorted(groups)


def heavy_packages(root: Path = PROJECT_ROOT, r: Rules | None = None) -> dict[str, frozenset[str]]:
    """Per project module: the `packages` of the rules it imports when imported (through its
    module-level imports of project modules too)."""
    r = r or rules(root)
    known, found = scan(root)
    direct: dict[str, set[str]] = {m: set() for m in known}
    deps: dict[str, set[str]] = {m: set() for m in known}
    for imp in found:
        if imp.in_function:
            continue
        tops = {n.split(".")[0] for n in imp.names if n}
        direct[imp.module] |= tops & r.packages
        deps[imp.module] |= targets_of(imp, known)
    out: dict[str, frozenset[str]] = {}

    def walk(m: str, seen: set[str]) -> set[str]:
        if m in out:
            return set(out[m])
        if m in seen:
            return set()
        seen.add(m)
        h = set(direct[m])
        for d in deps[m]:
            h |= walk(d, seen)
        return h

    for m in known:
        out[m] = frozenset(walk(m, set()))
    return out


def lazy_other_imports(root: Path = PROJECT_ROOT) -> list[str]:
    """`module:line imports name` for each import of a package (standard library included) inside a
    function that `packages` does not list."""
    r = rules(root)
    _, found = scan(root)
    bad = []
    for imp in found:
        if not imp.in_function or imp.module in r.modules:
            continue
        for name in dict.fromkeys(n for n in imp.names if n.split(".")[0] not in PACKAGES + tuple(r.packages)):
            bad.append(f"{imp.module}:{imp.line} imports {name} inside a function")
            break
    return bad


def lazy_project_imports(root: Path = PROJECT_ROOT) -> list[str]:
    """`module:line imports target` for each import of a project module inside a function that the
    rules do not allow (the target pulls no heavy package the importing module does not already)."""
    r = rules(root)
    known, found = scan(root)
    heavy = heavy_packages(root, r)
    bad = []
    for imp in found:
        if not imp.in_function or imp.module in r.modules:
            continue
        for t in sorted(targets_of(imp, known)):
            if any({imp.module, t} <= c for c in PENDING_CYCLES):
                continue  # what keeps a pending cycle from failing at import time
            if not heavy[t] - heavy[imp.module]:
                bad.append(f"{imp.module}:{imp.line} imports {t} inside a function")
    return bad


def problems(root: Path = PROJECT_ROOT) -> list[str]:
    """Every broken rule, one line each (empty: all kept)."""
    out = []
    found = {frozenset(c) for c in cycles(root)}
    for c in sorted(found - set(PENDING_CYCLES), key=sorted):
        out.append(f"import cycle: {' <-> '.join(sorted(c))}")
    for c in PENDING_CYCLES:
        if c not in found:
            out.append(f"no longer a cycle: {sorted(c)} (delete it from ops.importcheck.PENDING_CYCLES)")
    return out + lazy_project_imports(root) + lazy_other_imports(root)


def main() -> int:
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    print(f"importcheck: {'ok' if not found else f'{len(found)} problem(s)'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
