"""The package's modules import each other in layers: no import circle, nothing below the model imports it.

Every ``import`` inside ``dvlta_metric`` counts, at module level or inside a function, under
``TYPE_CHECKING`` or not: a lazy or type-only import back up is still a circle for a reader and a type
checker.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dvlta_metric"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules that ``path`` imports (``from .x import y`` counts ``x.y`` when that is a module)."""
    name = module_name(path)
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def test_the_graph_sees_the_package(graph: dict[str, set[str]]) -> None:
    assert "dvlta_metric.model" in graph and "dvlta_metric.views.temporal" in graph
    assert "dvlta_metric.config" in graph["dvlta_metric.views.temporal"]  # relative imports are resolved


def test_no_import_circle(graph: dict[str, set[str]]) -> None:
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if nxt.endswith("__init__") or nxt == "dvlta_metric":
                continue  # the package's front door re-exports; it is never imported from inside
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_nothing_below_the_model_imports_it(graph: dict[str, set[str]]) -> None:
    below: set[str] = set()
    todo = [m for m in graph["dvlta_metric.model"] if m != "dvlta_metric"]
    while todo:
        module = todo.pop()
        if module not in below:
            below.add(module)
            todo.extend(graph[module] - {"dvlta_metric"})
    offenders = sorted(m for m in below if "dvlta_metric.model" in graph[m])
    assert not offenders, f"modules the model imports import the model back: {offenders}"


def test_the_package_imports_itself_relatively() -> None:
    absolute = [
        f"{p.relative_to(PACKAGE.parent)}:{node.lineno}"
        for p in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(p.read_text()))
        if (isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("dvlta_metric"))
        or (isinstance(node, ast.Import) and any(a.name.startswith("dvlta_metric") for a in node.names))
    ]
    assert not absolute, f"absolute self-imports (use relative ones): {absolute}"
