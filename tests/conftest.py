from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.store import KeyStore, open_store
from tests.fakes import Clock
from tests.inprocess import AppGateway, FakeTimers, FakeUpstream
from tests.servers import GatewayProcess, ServerProcess, start_stub


@pytest.fixture(scope="session")
def stub() -> Iterator[ServerProcess]:
    server = start_stub()
    yield server
    server.stop()


GatewayFactory = Callable[..., GatewayProcess]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A module about the upstream hop names the clients it runs with (UPSTREAM_CLIENTS): all of
    # its tests run once with each.
    clients = getattr(metafunc.module, "UPSTREAM_CLIENTS", None)
    if clients and "upstream_client" in metafunc.fixturenames:
        metafunc.parametrize("upstream_client", clients, scope="module")


@pytest.fixture(scope="module")
def upstream_client() -> str | None:
    """The upstream.client of the module's gateways (None: the default)."""
    return None


@pytest.fixture(scope="module")
def gateway_factory(
    stub: ServerProcess, tmp_path_factory: pytest.TempPathFactory, upstream_client: str | None
) -> Iterator[GatewayFactory]:
    """Starts gateways in front of the stub; ``upstream.url`` defaults to it. Stopped after the module."""
    started: list[GatewayProcess] = []

    def start(settings: dict[str, Any] | None = None, **kwargs: Any) -> GatewayProcess:
        settings = dict(settings or {})
        settings.setdefault("upstream", {}).setdefault("url", stub.url)
        if upstream_client is not None:
            settings["upstream"].setdefault("client", upstream_client)
        settings.setdefault("logging", {"level": "info"})
        # Tests that are not about rate limits must never meet one.
        settings.setdefault("rate_limits", {"default": ["1000000/minute"]})
        settings.setdefault("auth_failures", {"limit": "1000000/minute"})
        server = GatewayProcess(tmp_path_factory.mktemp("gateway"), settings, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module", params=["aiohttp", "httpx", "builtin"])
def gateway(gateway_factory: GatewayFactory, request: pytest.FixtureRequest) -> GatewayProcess:
    """A gateway on the defaults in front of the stub, once with each upstream client."""
    return gateway_factory({"upstream": {"client": request.param}})


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    """An HTTP client that sends the gateway's key."""
    with httpx.Client(base_url=gateway.url, headers=gateway.auth, timeout=30) as http:
        yield http


@pytest.fixture
def clock() -> Clock:
    """A clock that moves only when a test ticks it."""
    return Clock()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """A SQLite store in a folder of its own."""
    return f"sqlite:///{tmp_path}/gateway.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def each_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store of each kind: SQLite in a folder of its own, and a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/gateway.db"
    else:
        from tests.services import postgres_schema

        with postgres_schema() as url:
            yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[KeyStore]:
    opened = await open_store(store_url)
    yield opened
    await opened.close()


AppGatewayFactory = Callable[..., Awaitable[AppGateway]]


@pytest.fixture
async def app_gateway_factory(tmp_path: Path) -> AsyncIterator[AppGatewayFactory]:
    """Starts the gateway's app in the test's loop (the in-process tier); stopped after the test."""
    started: list[AppGateway] = []

    async def start(settings: dict[str, Any] | None = None, upstream: FakeUpstream | None = None) -> AppGateway:
        folder = tmp_path / f"gateway{len(started)}"
        folder.mkdir()
        gateway = AppGateway(folder, settings, upstream)
        started.append(gateway)
        return await gateway.start()

    yield start
    for gateway in reversed(started):
        await gateway.stop()


@pytest.fixture
async def app_gateway(app_gateway_factory: AppGatewayFactory) -> AppGateway:
    """The gateway's app on the defaults, in front of a fake upstream that answers 200."""
    return await app_gateway_factory()


@pytest.fixture
def timers() -> FakeTimers:
    """The loop's timers as the HTTP protocol sees them: they fire when the test advances them."""
    return FakeTimers(asyncio.get_event_loop())
