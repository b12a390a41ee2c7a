"""How the package's layers depend on each other, checked by importing in a fresh interpreter."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest


def _loaded_by(module: str) -> list[str]:
    """The gateway modules that importing ``module`` loads, in a fresh interpreter."""
    code = f"import sys, json, {module}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('gateway'))))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded: list[str] = json.loads(found.stdout)
    return loaded


@pytest.mark.parametrize("backend", ["gateway.store.sqlite", "gateway.store.postgres"])
def test_a_store_backend_loads_nothing_but_the_store(backend: str) -> None:
    # No management, import, configuration or error-profile code: the store sits below them.
    assert [m for m in _loaded_by(backend) if m != "gateway" and not m.startswith("gateway.store")] == []


@pytest.mark.parametrize(
    "client", ["gateway.upstream.aiohttp_client", "gateway.upstream.httpx_client", "gateway.upstream.builtin_client"]
)
def test_an_upstream_client_loads_nothing_of_the_request_path_or_the_store(client: str) -> None:
    above = ("gateway.http.proxy", "gateway.http.app", "gateway.http.protocol", "gateway.admin.api", "gateway.cli")
    beside = ("gateway.store", "gateway.manage", "gateway.accounting", "gateway.auth.verify")
    assert [m for m in _loaded_by(client) if m.startswith(above + beside)] == []


def _imports_of_every_module() -> dict[str, set[str]]:
    """Each gateway module and the gateway modules it imports, deferred and type-only imports included."""
    package = Path(__file__).resolve().parent.parent / "gateway"
    names = {
        ".".join(("gateway", *path.relative_to(package).with_suffix("").parts)).removesuffix(".__init__"): path
        for path in package.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gateway"):
                imported.add(node.module)
                imported |= {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names if alias.name.startswith("gateway")}
        graph[name] = {module for module in imported if module in names and module != name}
    return graph


def test_no_import_circle() -> None:
    graph = _imports_of_every_module()
    circles: list[tuple[str, ...]] = []
    for start in graph:
        # Every path back to ``start``, depth first, each module entered once.
        stack: list[tuple[str, tuple[str, ...]]] = [(start, (start,))]
        seen = {start}
        while stack:
            module, path = stack.pop()
            for imported in graph[module]:
                if imported == start:
                    circles.append(path + (start,))
                elif imported not in seen:
                    seen.add(imported)
                    stack.append((imported, (*path, imported)))
    # A package's __init__ re-exporting its own modules makes no circle between them.
    assert [" -> ".join(circle) for circle in circles if not _within_one_package(circle)] == []


def _within_one_package(circle: tuple[str, ...]) -> bool:
    package = min(circle, key=len)
    return all(module == package or module.startswith(package + ".") for module in circle)


# The layers from the bottom up; a module may import its own layer and the layers below it.
LAYERS: list[tuple[str, ...]] = [
    (
        "gateway",
        "gateway.units",
        "gateway.routes",
        "gateway.errors",
        "gateway.types",
        "gateway.profiles",
        "gateway.logs",
        "gateway.config",
    ),
    ("gateway.store",),
    ("gateway.upstream",),
    ("gateway.accounting",),
    ("gateway.auth",),
    ("gateway.ratelimit",),
    ("gateway.manage",),
    ("gateway.http",),
    ("gateway.admin",),
    ("gateway.portal",),
    ("gateway.server",),
    ("gateway.cli", "gateway.__main__"),
]


def _layer_of(module: str) -> int:
    matches = [
        (len(prefix), index)
        for index, layer in enumerate(LAYERS)
        for prefix in layer
        if module == prefix or (prefix != "gateway" and module.startswith(prefix + "."))
    ]
    assert matches, f"{module} belongs to no layer: add it to LAYERS"
    return max(matches)[1]


def test_every_layer_imports_only_itself_and_the_layers_below() -> None:
    upward = [
        f"{module} -> {imported}"
        for module, imports in _imports_of_every_module().items()
        for imported in imports
        if _layer_of(imported) > _layer_of(module)
    ]
    assert upward == []
