"""How the package's layers depend on each other, checked by importing in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_the_upstream_clients_load_nothing_above_them() -> None:
    allowed = {"gateway", "gateway.config", "gateway.errors", "gateway.keys", "gateway.profiles", "gateway.ratelimit"}
    allowed |= {"gateway.units", "gateway.upstream", "gateway.upstream.base", "gateway.upstream.aiohttp_client"}
    assert set(_loaded_by("gateway.upstream.aiohttp_client")) <= allowed
