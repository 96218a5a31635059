"""The core modules import one another in layers, never in a circle.

Every import counts, wherever it stands: at the top, inside a function, or under
`if TYPE_CHECKING:` (hiding an import does not untie two modules). cli/ and dashboard/
stand on top of everything and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "beatq"
LEFT_OUT = ("beatq.cli", "beatq.dashboard")


def module_name(path: Path) -> str:
    parts = ["beatq", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_modules() -> dict[str, Path]:
    found = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {
        name: path
        for name, path in found.items()
        if not any(name == top or name.startswith(top + ".") for top in LEFT_OUT)
    }


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that the module `name` (file `path`) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            if node.level:
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # `from package import name` names a submodule or something the package holds
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def import_graph() -> dict[str, set[str]]:
    modules = core_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def test_the_core_modules_import_one_another_without_a_circle() -> None:
    graph = import_graph()
    assert "beatq.workflow" in graph and "beatq.canvas" in graph  # the walk found the core
    assert circles(graph) == []


def test_the_workflow_and_what_it_stands_on_never_import_the_worker_or_the_app() -> None:
    graph = import_graph()
    below = {"beatq.workflow", "beatq.builtins", "beatq.task", "beatq.canvas", "beatq.result"}
    below |= {"beatq.events", "beatq.control", "beatq.context"}
    for name in sorted(below):
        above = {m for m in graph[name] if m == "beatq.app" or m.startswith("beatq.worker")}
        assert not above, f"{name} imports {sorted(above)}"


def test_a_circle_is_found_however_the_import_is_hidden(tmp_path: Path) -> None:
    """The finder itself: a TYPE_CHECKING import and a function-local one close a circle."""
    (tmp_path / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
    )
    (tmp_path / "b.py").write_text("def f():\n    from . import a\n")
    (tmp_path / "c.py").write_text("from .a import x\n")
    known = {"pkg.a", "pkg.b", "pkg.c"}
    graph = {f"pkg.{p.stem}": imports_of(f"pkg.{p.stem}", p, known) for p in tmp_path.glob("*.py")}
    assert circles(graph) == [["pkg.a", "pkg.b"]]
