"""No import circle among our modules (the operator side, the client and the worker), counting
imports hidden inside functions or under TYPE_CHECKING: a circle there means two modules share
something that belongs in a third."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kubesessions
import kubesessions_worker

pytestmark = pytest.mark.unit

PACKAGE_ROOT = Path(kubesessions.__file__).parent
WORKER_ROOT = Path(kubesessions_worker.__file__).parent


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_dir: Path, root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, wherever in its body. ``from p
    import m`` of a submodule ``m`` imports ``m`` (``p`` is a parent, set up before it)."""
    modules = {_module_name(root, p): p for p in package_dir.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                subs = [f"{base}.{alias.name}" for alias in node.names]
                targets = [t for t in subs if t in modules] or [base]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for nxt in sorted(graph[node]):
            if cycle := visit(nxt, [*path, node]):
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        if cycle := visit(start, []):
            return cycle
    return None


def test_the_checker_sees_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("root", [PACKAGE_ROOT, WORKER_ROOT], ids=["kubesessions", "worker"])
def test_our_modules_import_no_circle(root: Path) -> None:
    graph = import_graph(root, root)
    assert sum(map(len, graph.values())) > 10, "the graph found hardly any imports"
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph) or [])}"


def test_a_submodule_import_is_not_an_import_of_its_package() -> None:
    graph = import_graph(PACKAGE_ROOT / "client")
    assert "kubesessions.client._core" in graph["kubesessions.client.aio"]
    assert "kubesessions.client" not in graph["kubesessions.client.aio"]
