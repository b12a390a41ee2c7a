from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.servers import ServerProcess, start_gateway, start_stub


@pytest.fixture(scope="session")
def stub() -> Iterator[ServerProcess]:
    server = start_stub()
    yield server
    server.stop()


GatewayFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="module")
def gateway_factory(stub: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFactory]:
    """Starts gateways in front of the stub; ``upstream.url`` defaults to it. Stopped after the module."""
    started: list[ServerProcess] = []

    def start(settings: dict[str, Any] | None = None, **kwargs: Any) -> ServerProcess:
        settings = dict(settings or {})
        settings.setdefault("upstream", {}).setdefault("url", stub.url)
        settings.setdefault("log", {"level": "info"})
        server = start_gateway(tmp_path_factory.mktemp("gateway"), settings, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module", params=["aiohttp", "httpx"])
def gateway(gateway_factory: GatewayFactory, request: pytest.FixtureRequest) -> ServerProcess:
    """A gateway on the defaults in front of the stub, once with each upstream client."""
    return gateway_factory({"upstream": {"client": request.param}})


@pytest.fixture
def client(gateway: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        yield http
