"""docs/architecture.md against the tree: every module it names exists, every module of the
tree is named there, and the sweep's modules import each other without a circle (a module that
imports one that imports it back calls up as well as down: the path is no longer one way)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()


def _modules() -> list[Path]:
    found = [*ROOT.glob("sweep/*.py"), *ROOT.glob("core/*.py"), *ROOT.glob("core/*.c"),
             *ROOT.glob("core/src/*.[ch]"), *ROOT.glob("core/live/*.[ch]"),
             *ROOT.glob("core/live/*.py")]
    return sorted(p for p in found if p.name != "__init__.py" or p.parent.name == "live")


def test_every_module_of_the_tree_is_named():
    missing = [str(p.relative_to(ROOT)) for p in _modules()
               if not re.search(rf"(?<![\w.]){re.escape(p.name)}(?![\w])", DOC)
               and str(p.relative_to(ROOT)) not in DOC]
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_every_path_it_names_exists():
    named = set(re.findall(r"`((?:sweep|core|tests|conf)/[\w/.-]+?)`", DOC))
    named |= set(re.findall(r"\b((?:sweep|core)/[\w/-]+\.(?:py|c|h))\b", DOC))
    gone = sorted(n for n in named if not (ROOT / n.rstrip("/")).exists()
                  and not (ROOT / n.split(".")[0]).exists())
    assert not gone, f"docs/architecture.md names what is not there: {gone}"


def _runtime_imports(path: Path) -> set[str]:
    """The sweep modules ``path`` imports when it runs as a module (function-local imports
    included; those under ``if TYPE_CHECKING:`` are annotations, not calls, and those under
    ``if __name__ == "__main__":`` run only when it is the program)."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        # annotations only; or the module run as the program (``python -m sweep.plan``),
        # which stands above everything, the command line included
        if isinstance(node, ast.If) and ("TYPE_CHECKING" in ast.unparse(node.test)
                                         or "__name__ ==" in ast.unparse(node.test)):
            typing_only |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "sweep":
                found |= {a.name for a in node.names}
            elif node.module.startswith("sweep."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("sweep.")}
    return found - {path.stem}


def test_the_sweep_imports_without_a_circle():
    graph = {p.stem: _runtime_imports(p) for p in (ROOT / "sweep").glob("*.py")}
    graph = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    circles = []
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                circles.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "sweep modules import in a circle: " + "; ".join(
        " -> ".join(c) for c in circles)


def test_the_circle_check_can_fail(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from sweep import b\n")
    b.write_text("from sweep.a import f\n")
    assert _runtime_imports(a) == {"b"} and _runtime_imports(b) == {"a"}
    c = tmp_path / "c.py"
    c.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sweep import a\n")
    assert _runtime_imports(c) == set()
