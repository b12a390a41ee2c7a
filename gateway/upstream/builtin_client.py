"""The upstream hop on the gateway's own HTTP/1.1 client (``upstream.client: builtin``): asyncio
protocols, llhttp (httptools) for responses, a keep-alive pool, the request head written as the
bytes received. The contract is in ``base.py``; the design notes in docs/internals.md."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

from gateway.config import UpstreamConfig
from gateway.errors import UpstreamAborted, UpstreamTimeout, UpstreamUnavailable
from gateway.upstream.base import UnreadBytes, leaves_bytes_behind

__all__ = ["BuiltinUpstream"]

# A response head larger than this is refused (aiohttp refuses a header line over 8,190 bytes).
MAX_HEAD_BYTES = 64 * 1024
# Body bytes held for a reader before the connection stops reading from the upstream.
READ_BUFFER = 256 * 1024
# How long a pooled connection may sit idle before it is closed.
IDLE_SECONDS = 60.0
# Sent again once on a new connection when a pooled one turns out closed before any answer byte
# (an upstream restart drops them all), as aiohttp does; never a request that may not be repeated.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class _Exchange(asyncio.Protocol):
    """One TCP connection to the upstream, carrying one exchange at a time."""

    def __init__(self, pool: BuiltinUpstream) -> None:
        self._pool = pool
        self._loop = pool._loop
        self.transport: asyncio.Transport | None = None
        self.unread = UnreadBytes(None)
        self._parser = httptools.HttpResponseParser(self)
        self.reusable = False  # set once an exchange ended cleanly with keep-alive
        self.closed = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._read_timer: asyncio.TimerHandle | None = None
        self._writable: asyncio.Future[None] | None = None
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self._cancel_read_timer()
        self._active = False
        self._head_only = False
        self._head: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._head_received = 0  # bytes received before the final head was complete
        self._body_received = 0
        # Bytes received since the body last grew (trailers, chunk extensions): bounded like a head.
        self._beside_body = 0
        self._paused = False  # reading paused until the reader takes what is held
        self._sent_body = False
        self._final = False  # the final head (not a 1xx) is complete
        self.content_length: int | None = None
        self._delimited = False  # the body's end is known from its head (not the connection's end)
        self.chunks: list[bytes] = []
        self._buffered = 0
        self.complete = False
        self.failure: BaseException | None = None
        self._more: asyncio.Future[None] | None = None
        self.answered = False  # a byte of this exchange's answer has arrived

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not asyncio's class
        self.unread = UnreadBytes(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool._forget(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._cancel_read_timer()
        if self._active and not self.complete:
            if self._final and not self._delimited and exc is None:
                self._finish()  # a body that ends with the connection, as its head said
            else:
                self._fail(UpstreamUnavailable("the upstream closed the connection"))
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        self._wake_writer()
        self._writable = None

    def _wake_writer(self) -> None:
        """Let a body being written go on, or see why it cannot (an answer came, or a failure)."""
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self._active or self.complete:
            # Nothing asked for these bytes: they must never be read as the next exchange's answer.
            self.reusable = False
            self.close()
            return
        self.answered = True
        if not self._final:
            # The whole head, interim answers included, within MAX_HEAD_BYTES (llhttp would
            # otherwise gather a header value that never ends) and one read_timeout (not re-armed):
            # the parser is given no more than what is left of that, so a head cannot exceed it
            # by arriving in one large read.
            room = MAX_HEAD_BYTES - self._head_received
            head = data[:room]  # (data itself when it fits: no copy)
            self._head_received += len(head)
            if not self._feed(head):
                return
            if not self._final:
                if self._head_received >= MAX_HEAD_BYTES:
                    self._fail(UpstreamUnavailable(f"the upstream's answer head is over {MAX_HEAD_BYTES} bytes"))
                    self.close()
                return
            data = data[room:]  # the body's first bytes, if they came with the head
            if not data or self.complete or self.closed:
                return
        self._arm_read_timer()  # the body's progress: the next read gets a deadline of its own
        body_before = self._body_received
        if not self._feed(data):
            return
        if self.complete or self._body_received != body_before:
            self._beside_body = 0
            return
        # Nothing of the body in this read: trailers or chunk extensions, which llhttp gathers
        # (a trailer's value in memory, growing), and which re-arm the read deadline. Bounded.
        self._beside_body += len(data)
        if self._beside_body > MAX_HEAD_BYTES:
            self._fail(UpstreamAborted(f"the upstream sent over {MAX_HEAD_BYTES} bytes besides its answer's body"))
            self.close()

    def _feed(self, data: bytes) -> bool:
        """Parse ``data``; False if the answer cannot be parsed (then it failed and the connection is closed)."""
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            # (an upgrade, 101, is no answer the gateway carries: the proxy answers it 502)
            self._fail(UpstreamUnavailable(f"the upstream's answer could not be parsed: {type(exc).__name__}"))
            self.close()
            return False
        return True

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            # A second answer in the same read: nothing asked for it.
            raise UpstreamUnavailable("the upstream answered out of turn")
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._final:
            return  # a trailer: never a head field
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # interim: the final answer follows, within the same deadline
        self._final = True
        self.status = status
        lengths = [value for name, value in self.headers if name.lower() == b"content-length"]
        codings = b",".join(value for name, value in self.headers if name.lower() == b"transfer-encoding")
        # The final coding, as llhttp reads it: "xchunked" is not chunked (its body ends with the connection).
        chunked = codings.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        if len(lengths) == 1 and not codings and lengths[0].strip().isdigit():
            self.content_length = int(lengths[0])
        # Otherwise (another final coding) the body ends with the connection (RFC 9112, 6.3).
        self._delimited = chunked or (bool(lengths) and not codings) or status in (204, 304)
        if self._head is not None and not self._head.done():
            self._head.set_result(None)
        self._wake_writer()  # an answer before the whole body was sent: stop sending it
        if self._head_only:
            # The answer to HEAD has no body, whatever its Content-Length says; llhttp cannot be
            # told, so the connection is not used again.
            self._finish()
            self.close()
        else:
            self._arm_read_timer()  # the body's first read

    def on_body(self, body: bytes) -> None:
        if not self._final or self.complete:
            return
        self.chunks.append(body)
        self._body_received += len(body)
        self._buffered += len(body)
        if self._buffered > READ_BUFFER and self.transport is not None and not self._paused:
            self.transport.pause_reading()
            self._paused = True
            # Waiting on the reader (a slow client), not on the upstream: no read deadline meanwhile.
            self._cancel_read_timer()
        self._wake()

    def on_message_complete(self) -> None:
        if not self._final or self.complete:
            return
        self.reusable = self._parser.should_keep_alive() and not leaves_bytes_behind(
            self.status, self.headers, sent_body=self._sent_body
        )
        self._finish()

    # ------------------------------------------------------------------ the exchange

    def _finish(self) -> None:
        self.complete = True
        self._cancel_read_timer()
        self._wake()

    def _fail(self, failure: BaseException) -> None:
        if self.complete or self.failure is not None:
            return
        self.failure = failure
        self.reusable = False
        self._cancel_read_timer()
        if self._head is not None and not self._head.done():
            self._head.set_exception(failure)
            self._head.exception()  # retrieved by the request, if it still waits
        self._wake()
        self._wake_writer()

    def _wake(self) -> None:
        if self._more is not None and not self._more.done():
            self._more.set_result(None)

    def _arm_read_timer(self) -> None:
        self._cancel_read_timer()
        self._read_timer = self._loop.call_later(self._pool._read_timeout, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self._final:
            self._fail(UpstreamAborted("the upstream sent nothing more within upstream.read_timeout"))
        else:
            self._fail(UpstreamTimeout("no final answer from the upstream within upstream.read_timeout"))
        self.close()

    async def send(self, head: bytes, body: bytes | AsyncIterable[bytes] | None, head_only: bool) -> None:
        """Write the request and wait for the final answer's head, all within one read_timeout."""
        self._reset_exchange()
        self._active = True
        self._head_only = head_only
        self._head = self._loop.create_future()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        transport = self.transport
        assert transport is not None
        self._arm_read_timer()
        self._sent_body = bool(body)
        if body is None or isinstance(body, bytes):
            transport.write(head + body if body else head)
        else:
            transport.write(head)
            async for block in body:
                if self._writable is not None:
                    await self._writable
                if self.closed or self._final or self.failure is not None:
                    # An answer before the whole body (say a 413), or a failure: the rest is not
                    # sent, and the connection never carries another exchange.
                    self.reusable = False
                    break
                transport.write(block)
        await self._head

    async def more(self) -> None:
        """Wait for more of the body, its end, or a failure."""
        self._more = self._loop.create_future()
        try:
            await self._more
        finally:
            self._more = None

    def took(self, size: int) -> None:
        """The reader has taken ``size`` bytes: read from the upstream again if it was paused."""
        self._buffered -= size
        if self._paused and self._buffered <= READ_BUFFER and self.transport is not None and not self.closed:
            self.transport.resume_reading()
            self._paused = False
            if not self.complete and self.failure is None:
                self._arm_read_timer()  # waiting on the upstream again

    def park(self) -> None:
        """Back in the pool, for at most IDLE_SECONDS, reading again (a reader that stopped early
        may have left its reading paused), so that bytes out of turn are seen."""
        self._active = False
        self._cancel_read_timer()
        self.chunks = []
        self._buffered = 0
        self._paused = False
        if self.transport is not None:
            self.transport.resume_reading()
        self._idle_timer = self._loop.call_later(IDLE_SECONDS, self.close)


class _Response:
    __slots__ = ("_connection", "_done", "content_length", "headers", "status")

    def __init__(self, connection: _Exchange) -> None:
        self._connection = connection
        self._done = False
        self.status = connection.status
        self.headers = connection.headers
        self.content_length = connection.content_length

    async def read(self) -> bytes:
        connection = self._connection
        while not connection.complete:
            if connection.failure is not None:
                raise UpstreamUnavailable(f"upstream broke off the response: {connection.failure}")
            await connection.more()
        chunks = connection.chunks
        connection.took(sum(map(len, chunks)))
        content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        connection.chunks = []
        self._done = True
        return content

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            if connection.chunks:
                chunks, connection.chunks = connection.chunks, []
                connection.took(sum(map(len, chunks)))
                for chunk in chunks:
                    yield chunk
                continue
            if connection.complete:
                self._done = True
                return
            if connection.failure is not None:
                raise UpstreamAborted(str(connection.failure))
            await connection.more()

    async def aclose(self) -> None:
        self._connection._pool._release(self._connection, complete=self._done or self._connection.complete)

    async def abandon(self) -> None:
        self._connection.close()


class BuiltinUpstream:
    def __init__(self, config: UpstreamConfig) -> None:
        parts = urlsplit(config.url)
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = parts.scheme == "https"
        self._connect_timeout = config.connect_timeout
        self._read_timeout = config.read_timeout
        self._max_idle = config.max_connections
        self._idle: list[_Exchange] = []
        self._loop = asyncio.get_running_loop()

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | None,
    ) -> _Response:
        # The head as received: names and values are the very bytes the client sent.
        lines = [method.encode("latin-1"), b" ", target.encode("latin-1"), b" HTTP/1.1\r\n"]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        head = b"".join(lines)
        connection, pooled = await self._connection()
        try:
            await connection.send(head, body, head_only=method == "HEAD")
        except UpstreamUnavailable:
            connection.close()
            replayable = body is None or isinstance(body, bytes)
            if not (pooled and not connection.answered and method in _IDEMPOTENT and replayable):
                raise
            connection, _ = await self._connection(fresh=True)
            try:
                await connection.send(head, body, head_only=method == "HEAD")
            except BaseException:
                connection.close()
                raise
        except BaseException:
            connection.close()
            raise
        return _Response(connection)

    async def _connection(self, *, fresh: bool = False) -> tuple[_Exchange, bool]:
        """A connection, and whether it comes from the pool."""
        while self._idle and not fresh:
            pooled = self._idle.pop()
            if pooled.closed:
                continue
            if pooled.unread.waiting():
                # Bytes nobody asked for (or the upstream's end), not yet read: never this request's answer.
                pooled.close()
                continue
            return pooled, True
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await self._loop.create_connection(
                    lambda: _Exchange(self), self._host, self._port, ssl=self._ssl or None
                )
        except TimeoutError:
            raise UpstreamUnavailable("connecting to the upstream timed out") from None
        except OSError as exc:
            raise UpstreamUnavailable(f"connecting to the upstream failed: {exc.strerror or exc}") from None
        return protocol, False

    def _release(self, connection: _Exchange, *, complete: bool) -> None:
        # Not with a request body still in the write buffer: the upstream answered without
        # reading it, and would read it as the start of the next request.
        sent = connection.transport is not None and connection.transport.get_write_buffer_size() == 0
        if complete and sent and connection.reusable and not connection.closed and len(self._idle) < self._max_idle:
            connection.park()
            self._idle.append(connection)
        else:
            connection.close()

    def _forget(self, connection: _Exchange) -> None:
        if connection in self._idle:
            self._idle.remove(connection)

    async def aclose(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
