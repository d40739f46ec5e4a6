"""The shape of the project's code, read from its source (no import of it): import cycles, imports
against the layers, imports inside functions and the largest function.

Used by bench/footprint.py; `python bench/codeshape.py [root]` prints the figures of any checkout. Imports are parsed from every `.py` file's syntax tree, the ones inside
functions included (that is what Python runs when the function does; those under
`if TYPE_CHECKING:` are left out: they never run), and resolved to project modules: `from a.b import c` counts as an import of `a.b.c` when that is a module, else of `a.b`.
"""

from __future__ import annotations

import ast
from pathlib import Path

from ops.importcheck import PACKAGES, scan, strongly_connected, targets_of

ROOT = Path(__file__).resolve().parent.parent
# Highest layer first. Packages on one line are independent of each other (neither imports the other).
LAYERS: tuple[tuple[str, ...], ...] = (("ops",), ("flows", "simulators"), ("serving", "reporting"), ("churnops",))


def shape(root: Path = ROOT) -> dict:
    """Edges between project modules (ops.importcheck reads the imports), every import statement
    inside a function, and the largest function."""
    known, found = scan(root)
    graph = {m: set() for m in known}
    in_functions: list[dict] = []
    project_statements = 0
    for imp in found:
        targets = targets_of(imp, known)
        graph[imp.module] |= targets
        project_statements += bool(targets)
        if imp.in_function:
            top = imp.names[0].split(".")[0] if imp.names[0] else ""
            shown = imp.names[-1] if len(imp.names) == 1 else imp.names[0]
            in_functions.append({"module": imp.module, "line": imp.line, "imports": shown, "project": top in PACKAGES})
    largest = {"lines": 0}
    for f in known.values():
        for fn in ast.walk(ast.parse(f.read_text(), str(f))):
            if (
                isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                and fn.end_lineno - fn.lineno + 1 > largest["lines"]
            ):
                largest = {"lines": fn.end_lineno - fn.lineno + 1, "function": f"{f.relative_to(root)}::{fn.name}"}
    return {
        "graph": graph,
        "in_functions": in_functions,
        "project import statements": project_statements,
        "largest": largest,
    }


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
    s = shape(root)
    cyc = strongly_connected(s["graph"])
    bad = against_layers(sorted((a, b) for a, bs in s["graph"].items() for b in bs))
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
