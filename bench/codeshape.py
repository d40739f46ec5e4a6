"""The shape of the project's code, read from its source (no import of it): import cycles, imports
against the layers, imports inside functions and the largest function.

Used by bench/footprint.py; `python bench/codeshape.py [root]` prints the figures of any checkout. Imports are parsed from every `.py` file's syntax tree, the ones inside
functions included (that is what Python runs when the function does; those under
`if TYPE_CHECKING:` are left out: they never run), and resolved to project modules: `from a.b import c` counts as an import of `a.b.c` when that is a module, else of `a.b`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Highest layer first. Packages on one line are independent of each other (neither imports the other).
LAYERS: tuple[tuple[str, ...], ...] = (("ops",), ("flows", "simulators"), ("serving", "reporting"), ("churnops",))
PROJECT = tuple(p for layer in LAYERS for p in layer)


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every project module's dotted name and its file."""
    out = {}
    for pkg in PROJECT:
        for f in sorted((root / pkg).rglob("*.py")) if (root / pkg).is_dir() else []:
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` is or lies inside."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imported(node: ast.Import | ast.ImportFrom, here: str, is_pkg: bool) -> list[str]:
    """The dotted names one import statement names (relative imports made absolute)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        parts = here.split(".")
        parts = parts if is_pkg else parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
    return [f"{base}.{a.name}" for a in node.names] + [base]


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Ids of the import statements under `if TYPE_CHECKING:` (never run)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            t = node.test
            name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                out |= {id(n) for b in node.body for n in ast.walk(b) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return out


def _functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def scan(root: Path = ROOT) -> dict:
    """Edges between project modules, and every import statement inside a function."""
    known = modules(root)
    edges: set[tuple[str, str]] = set()
    in_functions: list[dict] = []
    project_statements = 0
    largest = {"lines": 0}
    for mod, f in known.items():
        tree = ast.parse(f.read_text(), str(f))
        is_pkg = f.name == "__init__.py"
        inner = {id(n) for fn in _functions(tree) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
        typing_only = _type_checking_only(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in typing_only:
                continue
            names = _imported(node, mod, is_pkg)
            targets = {t for n in names if (t := _resolve(n, known)) and t != mod}
            # `from pkg import mod` names pkg.mod: do not also count pkg itself
            if isinstance(node, ast.ImportFrom) and len(targets) > 1:
                base = names[-1]
                targets.discard(base) if any(t != base for t in targets) else None
            edges |= {(mod, t) for t in targets}
            project_statements += bool(targets)
            if id(node) in inner:
                top = names[0].split(".")[0] if names[0] else ""
                in_functions.append(
                    {
                        "module": mod,
                        "line": node.lineno,
                        "imports": names[-1] if names else "",
                        "project": top in PROJECT,
                    }
                )
        for fn in _functions(tree):
            n = fn.end_lineno - fn.lineno + 1
            if n > largest["lines"]:
                largest = {"lines": n, "function": f"{f.relative_to(root)}::{fn.name}"}
    return {
        "modules": sorted(known),
        "edges": sorted(edges),
        "in_functions": in_functions,
        "project import statements": project_statements,
        "largest": largest,
    }


def cycles(mods: list[str], edges: list[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    out_edges: dict[str, list[str]] = {m: [] for m in mods}
    for a, b in edges:
        out_edges[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in mods:
        if start in index:
            continue
        work = [(start, iter(out_edges[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start), on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w), on.add(w)
                    work.append((w, iter(out_edges[w])))
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
                        found.append(sorted(group))
    return found


def layer_of(module: str) -> tuple[int, str]:
    """(rank, package): rank 0 is the highest layer."""
    top = module.split(".")[0]
    for rank, layer in enumerate(LAYERS):
        if top in layer:
            return rank, top
    raise KeyError(module)


def against_layers(edges: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Imports that go up the layers, or across between independent packages of one layer."""
    bad = []
    for a, b in edges:
        (ra, pa), (rb, pb) = layer_of(a), layer_of(b)
        if rb < ra or (rb == ra and pa != pb):
            bad.append((a, b))
    return bad


def measure(root: Path = ROOT) -> dict:
    """The figures bench/footprint.py records."""
    s = scan(root)
    cyc = cycles(s["modules"], s["edges"])
    bad = against_layers(s["edges"])
    inner = s["in_functions"]
    return {
        "import cycles": {"count": len(cyc), "modules in cycles": sum(map(len, cyc)), "list": cyc},
        "imports against the layers": {"count": len(bad), "list": [f"{a} -> {b}" for a, b in bad]},
        "imports inside functions": {
            "total": len(inner),
            "project-internal": sum(1 for i in inner if i["project"]),
            "project-internal share of project import statements": round(
                sum(1 for i in inner if i["project"]) / max(1, s["project import statements"]), 3
            ),
            "list": sorted({f"{i['module']}:{i['line']} {i['imports']}" for i in inner}),
        },
        "largest function": s["largest"],
    }


if __name__ == "__main__":
    import json
    import sys

    m = measure(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "list"} for k, v in m.items()}, indent=1))
    for c in m["import cycles"]["list"]:
        print(len(c), c)
    for e in m["imports against the layers"]["list"]:
        print("against:", e)
