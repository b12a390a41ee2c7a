"""The listener's deadlines and connection caps, in process: bytes fed to the gateway's HTTP
protocol on a fake transport, its timers fired by the test (no waiting for any deadline)."""

from __future__ import annotations

import pytest

from gateway.http.protocol import LINGER_SECONDS, MAX_PIPELINE
from tests.conftest import AppGatewayFactory
from tests.inprocess import AppGateway, Connection, FakeTimers, connect


@pytest.fixture
async def gw(app_gateway_factory: AppGatewayFactory) -> AppGateway:
    return await app_gateway_factory({"limits": {"head_timeout": "500ms", "keepalive_timeout": "1s"}})


def request(gw: AppGateway, path: str = "/x") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.key}\r\n\r\n".encode()


async def answered(conn: Connection) -> list[int]:
    await conn.settle()
    return [answer.status for answer in conn.responses()]


async def test_a_slow_head_gets_408_at_the_head_timeout(gw: AppGateway, timers: FakeTimers) -> None:
    conn = connect(gw, timers)
    conn.send(b"GET /slow-head HTTP/1.1\r\nHost: x\r\n")
    timers.advance(0.499)
    assert await answered(conn) == [] and not conn.transport.closed
    timers.advance(0.001)
    (answer,) = conn.responses()
    assert answer.status == 408 and answer.json()["error"]["code"] == "request_timeout"
    assert answer.header("connection") == "close"
    await conn.settle()
    assert conn.transport.closed


async def test_a_head_trickling_in_still_gets_408(gw: AppGateway, timers: FakeTimers) -> None:
    conn = connect(gw, timers)
    conn.send(b"GET /trickle HTTP/1.1\r\n")
    # A byte at a time keeps the connection busy but must not keep it alive (slow loris).
    for _ in range(9):
        timers.advance(0.05)
        conn.send(b"X")
    assert await answered(conn) == []
    timers.advance(0.05)
    assert await answered(conn) == [408]


async def test_a_silent_connection_is_closed_unanswered(gw: AppGateway, timers: FakeTimers) -> None:
    conn = connect(gw, timers)
    timers.advance(0.5)
    await conn.settle()
    assert conn.transport.closed and conn.transport.written == b""


async def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_head(
    gw: AppGateway, timers: FakeTimers
) -> None:
    conn = connect(gw, timers)
    conn.send(request(gw, "/first"))
    assert await answered(conn) == [200]
    conn.send(b"GET /second HTTP/1.1\r\n")
    timers.advance(0.5)
    assert await answered(conn) == [408]


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout(gw: AppGateway, timers: FakeTimers) -> None:
    conn = connect(gw, timers)
    conn.send(request(gw))
    assert await answered(conn) == [200]
    timers.advance(0.999)
    await conn.settle()
    assert not conn.transport.closed, "closed at once: a kept-alive connection must stay open a while"
    timers.advance(0.001)
    await conn.settle()
    assert conn.transport.closed


async def test_the_rest_of_a_refused_upload_is_not_waited_for(gw: AppGateway, timers: FakeTimers) -> None:
    conn = connect(gw, timers)
    # No key: refused before the body is read, and the body never comes but a byte at a time.
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    await conn.settle()
    (answer,) = conn.responses()
    assert answer.status == 401 and answer.header("connection") == "close"
    # Lingering: the sending side is shut, what still comes is read and discarded, for a while.
    assert conn.transport.eof_written and not conn.transport.closed
    for _ in range(int(LINGER_SECONDS * 10) - 1):
        timers.advance(0.1)
        conn.send(b"b")
    assert not conn.transport.closed
    timers.advance(0.1)
    await conn.settle()
    assert conn.transport.aborted


async def test_connections_beyond_the_cap_get_503(app_gateway_factory: AppGatewayFactory, timers: FakeTimers) -> None:
    gw = await app_gateway_factory({"limits": {"max_connections": 3}})
    held = [connect(gw, timers) for _ in range(3)]
    for conn in held:
        conn.send(b"GET /held HTTP/1.1\r\n")
    extra = connect(gw, timers)
    await extra.settle()
    (answer,) = extra.responses()
    assert answer.status == 503 and answer.header("retry-after") == "1"
    assert answer.json()["error"]["code"] == "service_unavailable"
    assert extra.transport.closed
    # Once one is closed, new connections are served again.
    held[0].transport.close()
    await held[0].settle()
    again = connect(gw, timers)
    again.send(request(gw))
    assert await answered(again) == [200]


async def test_one_address_cannot_take_every_connection(
    app_gateway_factory: AppGatewayFactory, timers: FakeTimers
) -> None:
    gw = await app_gateway_factory({"limits": {"max_connections_per_address": 3}})
    idle = [connect(gw, timers) for _ in range(3)]
    assert not any(conn.transport.closed for conn in idle)
    fourth = connect(gw, timers)
    await fourth.settle()
    (answer,) = fourth.responses()
    assert answer.status == 503 and answer.json()["error"]["code"] == "service_unavailable"
    # Another address is served meanwhile; a trusted peer (none here) would not be counted.
    other = connect(gw, timers, peer="127.0.0.2")
    other.send(request(gw))
    assert await answered(other) == [200]


async def test_a_deep_pipeline_is_cut_short(gw: AppGateway, timers: FakeTimers) -> None:
    conn = connect(gw, timers)
    conn.send(request(gw) * 200)  # in one piece: the protocol parses them together
    for _ in range(3 * MAX_PIPELINE):
        await conn.settle()
    # The one being answered and MAX_PIPELINE waiting behind it are answered, then the one
    # refused; then the connection closes.
    assert [answer.status for answer in conn.responses()] == [200] * (1 + MAX_PIPELINE) + [400]
    assert conn.transport.closed or conn.transport.eof_written
