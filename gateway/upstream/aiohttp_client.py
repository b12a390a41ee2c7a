"""The upstream hop on aiohttp (the contract is in ``base.py``)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, cast

import aiohttp
from aiohttp.client_proto import ResponseHandler
from yarl import URL

from gateway.config import UpstreamConfig
from gateway.errors import BadRequest, UpstreamAborted, UpstreamTimeout, UpstreamUnavailable
from gateway.upstream.base import UnreadBytes, carries_request_id, describe_failure, leaves_bytes_behind

__all__ = ["AiohttpUpstream"]

# aiohttp adds these unless told not to; the upstream must see only what the client sent.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class _VerbatimRequest(aiohttp.ClientRequest):
    """A ClientRequest that adds no ``Content-Length: 0`` to a bodiless POST, PUT, PATCH or DELETE.

    The client sent no body and no Content-Length, which HTTP/1.1 already reads as an empty body;
    adding the header would hand the upstream a header the client never sent.
    """

    def update_body_from_data(self, body: Any, _stacklevel: int = 3) -> None:
        if body is None:
            self._body = None
            return
        super().update_body_from_data(body, _stacklevel=_stacklevel + 1)


class _GuardedResponse(aiohttp.ClientResponse):
    """aiohttp's response, but its connection is marked to be closed, not pooled, when
    - its status forbids the body its head announces (a 204 with a Content-Length): aiohttp would
      pool it at the end of the head, and the body, coming late, would be read as the next
      request's answer;
    - it refuses a request that had a body: the upstream may not have read the body, and may read
      it as the next request on the connection (with whatever identity its bytes claim);
    - with upstream.check_request_id, it does not carry its request's X-Request-Id: the proxy
      refuses it, and the connection is out of step (this answer was another's, or nobody's).
    Decided here, as the head is read: a body that came whole with it has released the connection
    to the pool already, where another request could take it before the proxy looks."""

    check_request_id = False  # _CheckedResponse: upstream.check_request_id

    async def start(self, connection: Any) -> aiohttp.ClientResponse:
        protocol = connection.protocol
        response = await super().start(connection)
        sent_body = _had_body(self.request_info.headers)
        headers = list(self.raw_headers)
        out_of_step = self.check_request_id and not carries_request_id(
            headers, self.request_info.headers.get("X-Request-Id", "").encode("latin-1")
        )
        if protocol is not None and (out_of_step or leaves_bytes_behind(self.status, headers, sent_body=sent_body)):
            protocol.force_close()  # released, it is closed; _Connector._get never hands it out
            if self.connection is None:
                protocol.close()  # released already (its body came whole with the head): close it now
        return response


class _CheckedResponse(_GuardedResponse):
    check_request_id = True


def _had_body(headers: Any) -> bool:
    """Whether the request had a body (the proxy always sends one with its Content-Length)."""
    length = headers.get("Content-Length")
    return bool(length and length.strip("0 ")) or "Transfer-Encoding" in headers


class _Handler(ResponseHandler):
    """aiohttp's connection protocol, but an answer that cannot be parsed past its head (a trailer
    over aiohttp's line limit) fails its body's reader too: aiohttp 3.14 fails the protocol only,
    closes the connection, and leaves the reader, and so the client's answer, waiting for ever."""

    unread = UnreadBytes(None)
    # Bytes received in all, and as it went back to the pool: any more came while it sat idle
    # (aiohttp's parser takes in a partial head without a message to show for it).
    received = 0
    received_when_parked = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.unread = UnreadBytes(transport)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        super().data_received(data)

    def set_exception(self, exc: BaseException, *args: Any) -> None:
        payload = self._payload
        super().set_exception(exc, *args)
        if payload is not None and not payload.is_eof():
            payload.set_exception(aiohttp.ClientPayloadError(f"the upstream's answer could not be parsed: {exc}"))


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, with ``_Handler`` for its connections, and a pooled connection on
    which bytes arrived while it sat idle, read or still in the socket (``UnreadBytes``), is closed
    instead of reused: nothing asked for them, and aiohttp would read them as the response to the
    next request (another client's). aiohttp itself only checks that the socket is open."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._factory = cast("functools.partial[ResponseHandler]", functools.partial(_Handler, loop=self._loop))

    async def _get(self, *args: Any, **kwargs: Any) -> Any:
        while True:
            connection = await super()._get(*args, **kwargs)
            if connection is None:
                return None
            protocol = cast("_Handler | None", connection.protocol)
            if protocol is None or not (
                protocol.should_close or protocol.received != protocol.received_when_parked or protocol.unread.waiting()
            ):
                return connection
            connection.close()

    def _release(self, key: Any, protocol: ResponseHandler, *, should_close: bool = False) -> None:
        handler = cast("_Handler", protocol)
        handler.received_when_parked = handler.received
        super()._release(key, protocol, should_close=should_close)


class _HeadDeadlines:
    """Bounds the wait for each request's final answer head to ``upstream.read_timeout``.

    aiohttp's own sock_read deadline lapses once an interim (1xx) answer has been parsed, so an
    upstream that sends ``103 Early Hints`` and then nothing would hold the request for ever. A
    timer per request (``asyncio.timeout``) costs about 4 µs of the hot path; this sweep instead
    looks at the requests waiting once a second and cancels those past their deadline (so a
    deadline fires up to a second late).
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        # task -> when its wait ends
        self.waiting: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def start(self, task: asyncio.Task[Any]) -> None:
        self.waiting[task] = time.monotonic() + self._timeout

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for task in [task for task, deadline in self.waiting.items() if deadline <= now]:
                del self.waiting[task]
                self.expired.add(task)
                task.cancel()

    def close(self) -> None:
        self._sweeper.cancel()


class _SentBody:
    """A body read back from a file, noting whether every block of it was handed to aiohttp."""

    __slots__ = ("_blocks", "complete")

    def __init__(self, blocks: AsyncIterable[bytes]) -> None:
        self._blocks = blocks
        self.complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for block in self._blocks:
            yield block
        self.complete = True


class _Response:
    __slots__ = ("_body", "_read", "_response", "content_length", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, body: _SentBody | None) -> None:
        self._response = response
        self._body = body
        self._read = False
        self.status = response.status
        self.headers: list[tuple[bytes, bytes]] = list(response.raw_headers)
        self.content_length = response.content_length

    async def read(self) -> bytes:
        try:
            content = await self._response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnavailable(f"upstream broke off the response: {describe_failure(exc)}") from exc
        self._read = True
        return content

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamAborted(describe_failure(exc)) from exc
        self._read = True

    async def aclose(self) -> None:
        complete = self._read or self._response.content.at_eof()
        if complete and (self._body is None or self._body.complete):
            self._response.release()
        else:
            # The upstream may still be reading a request or sending a response that nobody will
            # finish: the connection must never carry another exchange.
            self._response.close()

    async def abandon(self) -> None:
        self._response.close()


class AiohttpUpstream:
    def __init__(self, config: UpstreamConfig) -> None:
        self._base = config.origin  # the proxy puts the base path in the target
        self._deadlines = _HeadDeadlines(config.read_timeout)
        self._session = aiohttp.ClientSession(
            connector=_Connector(limit=config.max_connections, limit_per_host=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=None, connect=config.connect_timeout, sock_read=config.read_timeout),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            request_class=_VerbatimRequest,
            response_class=_CheckedResponse if config.check_request_id else _GuardedResponse,
        )

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | None,
    ) -> _Response:
        # encoded=True: the target goes out byte for byte, dot segments and %2F included.
        url = URL(self._base + target, encoded=True)
        # A plain list: aiohttp copies headers into its own CIMultiDict anyway. aiohttp writes
        # header strings as UTF-8, so values are decoded as UTF-8 to go out as the very bytes
        # received; a value that is not UTF-8 cannot (aiohttp would drop or re-encode its bytes).
        try:
            header_list = [(name.decode("latin-1"), value.decode()) for name, value in headers]
        except UnicodeDecodeError:
            raise BadRequest("a header value is not UTF-8 (upstream.client: httpx forwards any bytes)") from None
        sent = _SentBody(body) if body is not None and not isinstance(body, bytes) else None
        task = asyncio.current_task()
        assert task is not None
        deadlines = self._deadlines
        deadlines.start(task)
        try:
            response = await self._session.request(
                method, url, headers=header_list, data=sent or body, allow_redirects=False, compress=None
            )
        except asyncio.CancelledError:
            if task not in deadlines.expired:
                raise
            task.uncancel()
            raise UpstreamTimeout("no final answer from the upstream within upstream.read_timeout") from None
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamUnavailable(f"connecting to the upstream timed out: {describe_failure(exc)}") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"the upstream did not answer in time: {describe_failure(exc)}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"upstream request failed: {describe_failure(exc)}") from exc
        finally:
            if deadlines.waiting.pop(task, None) is None:
                deadlines.expired.discard(task)
        return _Response(response, sent)

    async def aclose(self) -> None:
        self._deadlines.close()
        await self._session.close()
