"""The listener's deadlines, connection caps and pipelines, in process: bytes fed to the gateway's
HTTP protocol on a fake transport, its timers fired by the test (no waiting for any deadline)."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.http.protocol import LINGER_SECONDS, MAX_PIPELINE
from tests.conftest import AppGatewayFactory
from tests.inprocess import AppGateway, Connection, FakeTimers, FakeUpstream, SentRequest, UpstreamAnswer, connect


@pytest.fixture
async def gw(app_gateway_factory: AppGatewayFactory) -> AppGateway:
    return await app_gateway_factory({"limits": {"head_timeout": "500ms", "keepalive_timeout": "1s"}})


def request(gw: AppGateway, path: str = "/x") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.key}\r\n\r\n".encode()


@pytest.fixture
async def stuck(
    app_gateway_factory: AppGatewayFactory, timers: FakeTimers
) -> tuple[AppGateway, Connection, asyncio.Event]:
    """A gateway whose upstream answers only if nobody cancels the request, a connection to it,
    and the event set once the upstream has a request."""
    waits = asyncio.Event()

    async def never(sent: SentRequest) -> UpstreamAnswer:
        waits.set()
        await asyncio.Event().wait()
        return UpstreamAnswer()

    gw = await app_gateway_factory(upstream=FakeUpstream(never))
    return gw, connect(gw, timers), waits


def outcomes(gw: AppGateway) -> dict[str, int]:
    """The outcomes counted so far, those above zero."""
    return {name: count for name, count in gw.app.metrics.outcomes.items() if count}


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


async def test_a_client_that_leaves_behind_a_bad_pipelined_request_is_seen_to_leave(
    stuck: tuple[AppGateway, Connection, asyncio.Event],
) -> None:
    gw, conn, upstream_waits = stuck
    conn.send(request(gw, "/slow") + b"garbage\r\n\r\n")
    await asyncio.wait_for(upstream_waits.wait(), 5)
    await conn.settle(finish=False)
    # The refusal waits for the answer before it; meanwhile the gateway still reads, to see the client go.
    assert conn.responses() == [] and conn.transport.reading
    conn.transport.close()  # the client leaves
    await conn.settle()
    assert outcomes(gw) == {"client_closed": 2}  # the slow request, cancelled; the refused one, never answered


async def test_a_client_that_leaves_before_its_answer_is_logged_499(
    app_gateway_factory: AppGatewayFactory, timers: FakeTimers, capfd: pytest.CaptureFixture[str]
) -> None:
    head_sent = asyncio.Event()

    def head_now_body_never(sent: SentRequest) -> UpstreamAnswer:
        head_sent.set()
        return UpstreamAnswer(body_arrives=asyncio.Event())

    gw = await app_gateway_factory({"logging": {"access": True}}, FakeUpstream(head_now_body_never))
    conn = connect(gw, timers)
    conn.send(request(gw, "/small"))
    await asyncio.wait_for(head_sent.wait(), 5)
    await conn.settle(finish=False)
    conn.transport.close()  # the client leaves before any of its answer was sent
    await conn.settle()
    await gw.stop()  # writes the access log
    (line,) = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    assert (line["status"], line["outcome"]) == (499, "client_closed")


async def test_a_client_that_leaves_a_costed_request_held_upstream_still_pays_for_it(
    app_gateway_factory: AppGatewayFactory, timers: FakeTimers, capfd: pytest.CaptureFixture[str]
) -> None:
    # The upstream has the whole request and may do the work all the same: leaving before the
    # answer must not dodge the route's credits (it would on every slow, costly route).
    upstream_has_it = asyncio.Event()

    async def slow_render(sent: SentRequest) -> UpstreamAnswer:
        upstream_has_it.set()
        await asyncio.Event().wait()
        return UpstreamAnswer()

    gw = await app_gateway_factory({"logging": {"access": True}}, FakeUpstream(slow_render))
    conn = connect(gw, timers)
    body = b'{"template_id":"tpl_001"}'
    conn.send(
        b"POST /api/v1/mockups/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + gw.key.encode()
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    await asyncio.wait_for(upstream_has_it.wait(), 5)
    conn.transport.close()  # the client leaves while the upstream renders
    await conn.settle()
    await gw.stop()  # writes the usage and the access log
    key = await gw.service(lambda service: service.get_key(gw.key_id))
    assert (key.requests, key.credits) == (1, 1)
    (line,) = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    assert (line["status"], line["outcome"]) == (499, "client_closed")
    assert line["upstream_ms"] is not None  # the upstream was asked


async def test_a_request_cut_short_by_the_shutdown_gets_a_503_in_the_profile(
    stuck: tuple[AppGateway, Connection, asyncio.Event],
) -> None:
    gw, conn, upstream_waits = stuck
    conn.send(request(gw, "/slow"))
    await asyncio.wait_for(upstream_waits.wait(), 5)
    for task in conn.protocol.tasks:
        task.cancel()  # as uvicorn does once listen.shutdown_timeout has passed
    await conn.settle()
    (answer,) = conn.responses()
    assert answer.status == 503 and answer.header("content-type") == "application/json"
    assert answer.json()["error"]["code"] == "service_unavailable" and answer.header("connection") == "close"
    assert gw.app.metrics.outcomes["overloaded"] == 1


@pytest.mark.parametrize("status", [204, 304])
async def test_an_answer_without_a_body_is_passed_whatever_its_content_length(
    app_gateway_factory: AppGatewayFactory, timers: FakeTimers, status: int
) -> None:
    stated = [(b"content-length", b"8"), (b"etag", b'"v1"')]
    upstream = FakeUpstream(lambda sent: UpstreamAnswer(status=status, headers=stated, body=b"", chunks=1))
    gw = await app_gateway_factory(upstream=upstream)
    conn = connect(gw, timers)
    conn.send(request(gw) + request(gw))  # the connection carries the next request too
    assert await answered(conn) == [status, status]
    assert conn.responses() == [] and not conn.transport.closed


async def test_a_client_that_leaves_after_a_large_upload_is_seen_to_leave(
    stuck: tuple[AppGateway, Connection, asyncio.Event],
) -> None:
    gw, conn, upstream_waits = stuck
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (8 << 20)
    conn.send(head + b"Authorization: Bearer " + gw.key.encode() + b"\r\n\r\n")
    # In parts larger than the protocol holds before it stops reading; none while it does not read.
    for _ in range(32):
        while not conn.transport.reading:
            await asyncio.sleep(0)
        conn.send(bytes(256 << 10))
    await asyncio.wait_for(upstream_waits.wait(), 5)
    await conn.settle(finish=False)
    assert conn.transport.reading  # the request is all in: reading goes on, to see the client go
    conn.transport.close()  # the client leaves while the upstream works
    await conn.settle()
    assert outcomes(gw) == {"client_closed": 1}
