"""The upstream connection pool is shared by every client: slow uploads cannot take it, one key
cannot fill it, and a request that finds it full is told so soon (503), not after the connect timeout."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.manage.service import ManagementService
from tests.adversarial.fake_upstream import FakeUpstream
from tests.conftest import GatewayFactory
from tests.rawhttp import connect
from tests.servers import GatewayProcess

# Every test here runs with each upstream client: the default and aiohttp.
UPSTREAM_CLIENTS = ("builtin", "aiohttp")

PACE = 0.2  # seconds between the bytes of a deliberately slow upload


def _another_users_key(gw: GatewayProcess, user_id: str) -> dict[str, str]:
    async def create(service: ManagementService) -> str:
        await service.add_user(user_id)
        return (await service.create_key(user_id, name="tests")).key

    return {"Authorization": f"Bearer {gw.run_service(create)}"}


@contextlib.contextmanager
def _hanging(gw: GatewayProcess, upstream: FakeUpstream, count: int) -> Iterator[None]:
    """``count`` requests with ``gw``'s key, each holding an upstream connection on /hang until the block ends."""
    before = len(upstream.recording.heads)
    with contextlib.ExitStack() as held:
        for _ in range(count):
            sock = held.enter_context(connect(gw.port))
            sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"\r\n")
        assert upstream.recording.wait_for(before + count), "the hanging requests did not reach the upstream"
        yield


def test_slow_uploads_do_not_take_the_upstream_connections(
    gateway_factory: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway_factory({"upstream": {"url": upstream.url, "max_connections": 2}})
    other = _another_users_key(gw, "bob")
    trickling = [threading.Event(), threading.Event()]
    done = threading.Event()

    def upload(started: threading.Event) -> None:
        with connect(gw.port) as sock, contextlib.suppress(OSError):
            sock.sendall(b"POST /body HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"Content-Length: 1000\r\n\r\n")
            for sent in range(50):  # at most 10 s of a body that never completes
                sock.sendall(b"a")
                if sent == 4:
                    started.set()
                if done.wait(PACE):
                    return

    uploads = [threading.Thread(target=upload, args=(started,), daemon=True) for started in trickling]
    for thread in uploads:
        thread.start()
    try:
        assert all(started.wait(10) for started in trickling)
        began = time.monotonic()
        answer = httpx.get(f"{gw.url}/ok", headers=other, timeout=15)
        took = time.monotonic() - began
    finally:
        done.set()
        for thread in uploads:
            thread.join(10)
    assert answer.status_code == 200 and answer.text == "ok"
    assert took < 2, f"answered after {took:.1f} s: the slow uploads held the upstream connections"


@pytest.mark.parametrize("profile", ["mockly", "mockupanda"])
def test_a_key_beyond_its_requests_in_flight_gets_429(
    gateway_factory: GatewayFactory, upstream: FakeUpstream, profile: str
) -> None:
    gw = gateway_factory(
        {
            "upstream": {"url": upstream.url, "read_timeout": "5s"},
            "limits": {"max_concurrent_per_key": 2},
            "errors": {"profile": profile},
        }
    )
    with _hanging(gw, upstream, 2):
        answer = httpx.get(f"{gw.url}/ok", headers=gw.auth | {"X-Request-Id": f"third-{profile}"}, timeout=10)
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "1"
    body = answer.json()
    if profile == "mockly":
        assert body["error"]["code"] == "rate_limited" and isinstance(body["error"]["message"], str)
    else:
        assert body["code"] == "RATE_LIMIT_EXCEEDED" and isinstance(body["error"], str)
        assert body["details"] == {"max_concurrent": 2}
    assert gw.access_entry(f"third-{profile}")["outcome"] == "concurrency_limited"


def test_a_request_that_finds_the_pool_full_gets_503_after_pool_timeout(
    gateway_factory: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway_factory(
        {"upstream": {"url": upstream.url, "max_connections": 1, "pool_timeout": "500ms", "read_timeout": "5s"}}
    )
    other = _another_users_key(gw, "carol")  # another key: its own cap on requests in flight is far away
    with _hanging(gw, upstream, 1):
        began = time.monotonic()
        answer = httpx.get(f"{gw.url}/ok", headers=other, timeout=15)
        took = time.monotonic() - began
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "service_unavailable"
    assert answer.headers["retry-after"].isdigit()
    assert took < 3, f"answered after {took:.1f} s, past upstream.pool_timeout"


def test_a_user_beyond_its_requests_in_flight_gets_429_whatever_key_it_uses(
    gateway_factory: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway_factory(
        {
            "upstream": {"url": upstream.url, "read_timeout": "5s"},
            "limits": {"max_concurrent_per_key": 10, "max_concurrent_per_user": 2},
        }
    )

    async def second_key(service: ManagementService) -> str:
        return (await service.create_key(gw.user_id, name="second")).key

    another_key_of_alice = {"Authorization": f"Bearer {gw.run_service(second_key)}"}
    bob = _another_users_key(gw, "bob")
    with _hanging(gw, upstream, 2):
        refused = httpx.get(f"{gw.url}/ok", headers=another_key_of_alice, timeout=10)
        others = httpx.get(f"{gw.url}/ok", headers=bob, timeout=10)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert gw.access_entry(refused.headers["x-request-id"])["outcome"] == "concurrency_limited"
    assert others.status_code == 200  # another user's requests are not held back
