"""No import cycles inside ``engine``: not at run time, not under ``TYPE_CHECKING``.

Every module under ``engine/`` is parsed with ``ast``; every ``import engine...`` and
``from engine... import ...`` (relative ones too) anywhere in it — at module level, inside
``if TYPE_CHECKING:``, inside functions — is an edge of the module graph. ``from P import n``
is an edge to ``P.n`` when that is a module, else to ``P``. A parent package is not an edge
of its submodules (Python initialises it first, whatever it imports).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ENGINE = Path(__file__).resolve().parents[2] / "engine"
Graph = dict[str, set[str]]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(tree: ast.AST, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The engine modules ``name`` imports anywhere in ``tree``."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def nearest(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                targets.append(sub if sub in modules else source)
        for target in targets:
            if target == "engine" or target.startswith("engine."):
                resolved = nearest(target)
                if resolved is not None and resolved != name:
                    found.add(resolved)
    return found


def engine_graph(root: Path = ENGINE) -> Graph:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))
             if "__pycache__" not in p.parts}
    modules = set(files)
    return {name: imports_of(ast.parse(path.read_text(), str(path)), name,
                             path.name == "__init__.py", modules)
            for name, path in files.items()}


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle through each circle, as ``[a, b, ..., a]``."""
    return [_cycle_in(graph, component) for component in circles(graph)]


def circles(graph: Graph) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(start: str) -> None:  # iterative: the graph is deep enough to matter
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return components


def _cycle_in(graph: Graph, component: set[str]) -> list[str]:
    """The shortest cycle through the component's first module (breadth first)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle in {component}")


def test_the_engine_has_no_import_cycle() -> None:
    graph = engine_graph()
    found = circles(graph)
    if found:
        pytest.fail("import cycles:\n" + "\n".join(
            " -> ".join(_cycle_in(graph, c)) + f"\n    (all modules in this circle:"
            f" {', '.join(sorted(c))})" for c in found), pytrace=False)


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Guard against a check that cannot fail: TYPE_CHECKING, function-level and relative
    imports all make edges, and a cycle through them is found."""
    pkg = tmp_path / "engine"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from engine.sub.b import B\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from engine.sub import b\n")
    (pkg / "sub" / "b.py").write_text("class B:\n    def f(self):\n"
                                      "        from .c import C\n")
    (pkg / "sub" / "c.py").write_text("import engine.a as a\nimport os\n")
    graph = engine_graph(pkg)
    assert graph["engine.a"] == {"engine.sub.b"}
    assert graph["engine.sub.b"] == {"engine.sub.c"}
    assert graph["engine.sub.c"] == {"engine.a"}
    assert graph["engine.sub"] == {"engine.sub.b"}
    assert cycles(graph) == [["engine.a", "engine.sub.b", "engine.sub.c", "engine.a"]]
    (pkg / "sub" / "c.py").write_text("import os\n")
    assert cycles(engine_graph(pkg)) == []
