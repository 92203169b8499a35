"""The package layout holds: no import cycles, layers import only downwards, test stand-ins stay out.

Imports are read from the source (every ``import`` statement, inside functions too), so a cycle that
Python would tolerate at run time because one side imports lazily is still reported.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "ufsim_export": ROOT / "export" / "src" / "ufsim_export",
    "ufsim_client": ROOT / "client" / "src" / "ufsim_client",
    "ufsim_serve": ROOT / "deploy" / "local" / "src" / "ufsim_serve",
}
LAYERS = (
    "files",
    "spec",
    "graphs",
    "models",
    "convert",
    "metrics",
    "training",
    "validation",
    "repository",
    "cli",
    "testing",
)
"""ufsim_export's layers in pipeline order: a module may import its own layer and the ones before."""


def _module_name(package: str, root: Path, path: Path) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> dict[str, Path]:
    root = PACKAGES[package]
    return {_module_name(package, root, path): path for path in sorted(root.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules (of ``known``) that the source of module ``name`` imports anywhere."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {module for module in found if module in known}


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    modules = _modules(package)
    return {name: _imports(name, path, set(modules)) - {name} for name, path in modules.items()}


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_resolves_relative_imports() -> None:
    """The graph sees a known edge of each kind (guards against a parser that finds nothing)."""
    graph = import_graph("ufsim_export")
    assert "ufsim_export.graphs.builder" in graph["ufsim_export.graphs.rng"]
    assert "ufsim_export.training.calibration" in graph["ufsim_export.training.pid"]
    assert "ufsim_export.spec" in graph["ufsim_export.repository.writer"]


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycles(package: str) -> None:
    """Every package's module graph is acyclic (graphlib names the cycle when it is not)."""
    try:
        tuple(graphlib.TopologicalSorter(import_graph(package)).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"{package} has an import cycle: {' -> '.join(err.args[1])}")


def test_cycle_detection_fails_on_a_cycle() -> None:
    """The check above reports an injected cycle."""
    graph = import_graph("ufsim_export")
    graph["ufsim_export.spec"] = {"ufsim_export.repository.writer"}
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(graph).static_order())


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Edges from a layer to a later one (``testing`` is last, so production importing it is one)."""
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    return [
        f"{module} -> {target}"
        for module, targets in graph.items()
        if _layer(module) in rank
        for target in targets
        if _layer(target) in rank and rank[_layer(target)] > rank[_layer(module)]
    ]


def test_layers_import_only_downwards() -> None:
    """A module imports only from its own layer or earlier ones; production never imports testing."""
    graph = import_graph("ufsim_export")
    assert upward_imports(graph) == []
    unplaced = sorted({_layer(m) for m in graph} - {*LAYERS, "__init__"})
    assert unplaced == [], f"modules outside the declared layers: {unplaced}"


def test_layer_check_fails_on_production_importing_testing() -> None:
    """An injected import of the test stand-ins by the writer is reported."""
    graph = import_graph("ufsim_export")
    graph["ufsim_export.repository.writer"].add("ufsim_export.testing.toy")
    assert upward_imports(graph) == ["ufsim_export.repository.writer -> ufsim_export.testing.toy"]


def test_client_and_server_import_nothing_from_export() -> None:
    """Export may use the client's small modules; the client and ufsim-serve never import export."""
    offenders = []
    for package in ("ufsim_client", "ufsim_serve"):
        for name, path in _modules(package).items():
            if any(m == "ufsim_export" or m.startswith("ufsim_export.") for m in _imports_any(path)):
                offenders.append(name)
    assert offenders == []


def _imports_any(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return found


def unexplained_deferred_imports(package: str) -> list[str]:
    """Imports inside functions with no comment on their line or above their block of imports."""
    found = []
    for name, path in _modules(package).items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines), str(path))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                row = node.lineno - 1
                while row > 0 and lines[row - 1].lstrip().startswith(("import ", "from ")):
                    row -= 1
                above = lines[row - 1].strip() if row > 0 else ""
                if "#" not in lines[node.lineno - 1] and "#" not in lines[row] and not above.startswith("#"):
                    found.append(f"{name}:{node.lineno}")
    return found


def test_deferred_imports_say_why() -> None:
    """A function-level import hides a dependency; each one in export carries its reason."""
    assert unexplained_deferred_imports("ufsim_export") == []
