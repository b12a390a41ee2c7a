"""The in-process tier: the gateway's app and its HTTP protocol driven directly, in the test's own
event loop, with fakes only at the edges.

- ``FakeUpstream`` stands in for the upstream client (``create_app(upstream_client=...)``): it
  records every request the proxy sends and answers it with a handler of the test's.
- ``AppGateway`` is the real app on a real SQLite store with one user and key, its lifespan run
  in the test's loop; ``request`` sends one request as ASGI messages and collects the answer.
- ``Connection`` is the real HTTP protocol on a fake transport: a test feeds it bytes and reads
  what it wrote, and its timers fire when the test says (``FakeTimers.advance``), so deadlines
  are tested without waiting for them.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import h11
import yaml
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.config import GatewayConfig, load_config
from gateway.http.app import GatewayApp, create_app
from gateway.http.protocol import GatewayHttpProtocol, protocol_class
from gateway.manage.service import ManagementService
from gateway.store import open_store
from gateway.types import ASGIApp

__all__ = [
    "AppGateway",
    "Answer",
    "Connection",
    "FakeTimers",
    "FakeUpstream",
    "Lifespan",
    "SentRequest",
    "UpstreamAnswer",
]


# ----------------------------------------------------------------------------- the upstream


@dataclass
class SentRequest:
    """One request as the proxy sent it upstream."""

    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name]


@dataclass
class UpstreamAnswer:
    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b'{"ok":true}'
    # Sent as this many chunks of unknown total length (0: with Content-Length, in one piece).
    chunks: int = 0
    # Set when the body may arrive (None: at once, with the head).
    body_arrives: asyncio.Event | None = None


class _FakeResponse:
    def __init__(self, answer: UpstreamAnswer) -> None:
        self.status = answer.status
        self._body = answer.body
        self._chunks = answer.chunks
        self._body_arrives = answer.body_arrives
        self.headers = list(answer.headers)
        self.content_length: int | None = None
        if not answer.chunks:
            self.content_length = len(answer.body)
            self.headers.append((b"content-length", str(len(answer.body)).encode()))
        self.closed = False

    async def read(self) -> bytes:
        if self._body_arrives is not None:
            await self._body_arrives.wait()
        return self._body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        size = -(-len(self._body) // max(self._chunks, 1))
        for start in range(0, len(self._body), size or 1):
            yield self._body[start : start + size]

    async def aclose(self) -> None:
        self.closed = True

    async def abandon(self) -> None:
        self.closed = True


Handler = Callable[[SentRequest], Awaitable[UpstreamAnswer] | UpstreamAnswer]


class FakeUpstream:
    """An ``UpstreamClient`` that records each request and answers it with ``handler``
    (200 ``{"ok":true}`` unless told otherwise)."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler
        self.sent: list[SentRequest] = []
        self.closed = False

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | None,
    ) -> _FakeResponse:
        if body is None or isinstance(body, bytes):
            content = body or b""
        else:
            content = b"".join([block async for block in body])
        sent = SentRequest(method, target, list(headers), content)
        self.sent.append(sent)
        answer = UpstreamAnswer() if self.handler is None else self.handler(sent)
        if not isinstance(answer, UpstreamAnswer):
            answer = await answer
        return _FakeResponse(answer)

    async def aclose(self) -> None:
        self.closed = True


# ----------------------------------------------------------------------------- the app


@dataclass
class Answer:
    """What a client got: the status, the headers (names lower-case) and the body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [value.decode("latin-1") for key, value in self.headers if key == name.encode()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class Lifespan:
    """An ASGI app's lifespan, run in the test's event loop: ``start`` until the app has started,
    ``stop`` until it has shut down (again: nothing)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._task: asyncio.Task[None] | None = None
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def start(self) -> None:
        async def receive() -> dict[str, Any]:
            return await self._to_app.get()

        async def send(message: MutableMapping[str, Any]) -> None:
            await self._from_app.put(dict(message))

        self._task = asyncio.ensure_future(self.app({"type": "lifespan"}, receive, send))
        await self._to_app.put({"type": "lifespan.startup"})
        started = await self._from_app.get()
        assert started["type"] == "lifespan.startup.complete", started

    async def stop(self) -> None:
        if self._task is None:
            return
        task, self._task = self._task, None
        await self._to_app.put({"type": "lifespan.shutdown"})
        assert (await self._from_app.get())["type"] == "lifespan.shutdown.complete"
        await task


class AppGateway:
    """The gateway's app, started in the test's event loop on a SQLite store in ``tmp_dir`` that
    holds one user (``alice``) with one key; ``upstream`` answers what it forwards."""

    def __init__(self, tmp_dir: Path, settings: dict[str, Any] | None = None, upstream: FakeUpstream | None = None):
        settings = dict(settings or {})
        settings.setdefault("upstream", {}).setdefault("url", "http://upstream.test:9000")
        settings["store"] = {"url": f"sqlite:///{tmp_dir}/gateway.db"} | settings.get("store", {})
        settings.setdefault("logging", {}).setdefault("access", False)
        path = tmp_dir / "gateway.yaml"
        path.write_text(yaml.safe_dump(settings))
        self.config: GatewayConfig = load_config(path, environ={})
        self.upstream = upstream or FakeUpstream()
        self.app: GatewayApp = create_app(self.config, upstream_client=self.upstream)
        self.user_id = "alice"
        self.key = ""
        self.key_id = ""
        self._lifespan = Lifespan(self.app)

    async def start(self) -> AppGateway:
        created = await self.service(self._user_with_key)
        self.key, self.key_id = created
        await self._lifespan.start()
        return self

    async def stop(self) -> None:
        await self._lifespan.stop()

    async def _user_with_key(self, service: ManagementService) -> tuple[str, str]:
        await service.add_user(self.user_id)
        created = await service.create_key(self.user_id, name="tests")
        return created.key, created.record.id

    async def service(self, action: Callable[[ManagementService], Awaitable[Any]]) -> Any:
        """Run ``action`` through the service layer on a connection of its own to the store, as
        the CLI in another process would."""
        store = await open_store(self.config.store.url)
        try:
            return await action(ManagementService(store, key_prefix=self.config.keys.prefix))
        finally:
            await store.close()

    @property
    def auth(self) -> tuple[bytes, bytes]:
        return (b"authorization", f"Bearer {self.key}".encode())

    async def request(
        self,
        method: str = "GET",
        target: str = "/api/v1/templates",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        *,
        client: str = "127.0.0.1",
    ) -> Answer:
        """One request as uvicorn would hand it to the app (headers as given: add ``auth``)."""
        path, _, query = target.partition("?")
        raw_headers = [(b"host", b"gateway.test"), *(headers or [])]
        if body and not any(name in (b"content-length", b"transfer-encoding") for name, _ in raw_headers):
            raw_headers.append((b"content-length", str(len(body)).encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": raw_headers,
            "client": (client, 50000),
            "server": ("127.0.0.1", 8080),
            "state": {},
        }
        pending = [{"type": "http.request", "body": body, "more_body": False}]
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if pending:
                return pending.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        messages: list[MutableMapping[str, Any]] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            messages.append(message)

        try:
            await self.app(scope, receive, send)
        finally:
            gone.set()
        start = next(m for m in messages if m["type"] == "http.response.start")
        content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        return Answer(start["status"], list(start["headers"]), content)


# ----------------------------------------------------------------------------- the protocol


class _Timer:
    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when = when
        self._callback = callback
        self._args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def run(self) -> None:
        if not self.cancelled:
            self._callback(*self._args)


class FakeTimers:
    """The event loop as the protocol sees it: tasks run on the test's real loop, while timers
    (``call_later``) wait for the test to move the time on with ``advance``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.now = 0.0
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> _Timer:
        timer = _Timer(self.now + delay, callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def create_task(self, coroutine: Any, **kwargs: Any) -> asyncio.Task[Any]:
        return self._loop.create_task(coroutine, **kwargs)

    def pending(self) -> list[float]:
        """When each timer still armed is due, in seconds from now."""
        return sorted(when - self.now for when, _, timer in self._timers if not timer.cancelled)

    def advance(self, seconds: float) -> None:
        """Move the time on by ``seconds``, running every timer that falls due meanwhile, in order."""
        until = self.now + seconds
        # (within a nanosecond: ten steps of 0.05 s reach a timer due in 0.5 s, as they should)
        while self._timers and self._timers[0][0] <= until + 1e-9:
            when, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            timer.run()
        self.now = until


class FakeTransport:
    """A client connection as the protocol sees it: it keeps what the protocol writes."""

    def __init__(self, peer: str = "127.0.0.1") -> None:
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.eof_written = False
        self.reading = True
        self._peer = peer
        self._protocol: asyncio.BaseProtocol | None = None
        self.buffer_size = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": (self._peer, 50000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if isinstance(self._protocol, asyncio.Protocol):
                asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return self.buffer_size


class Connection:
    """One client connection to the gateway's HTTP protocol, on a fake transport and fake timers."""

    def __init__(self, protocol: GatewayHttpProtocol, transport: FakeTransport, timers: FakeTimers) -> None:
        self.protocol = protocol
        self.transport = transport
        self.timers = timers
        self._read = 0

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    async def settle(self, *, finish: bool = True) -> None:
        """Let the app's tasks run until nothing more happens on the loop (and, with ``finish``,
        until the requests' tasks have ended)."""
        for _ in range(50):
            await asyncio.sleep(0)
        tasks = [task for task in self.protocol.tasks if not task.done()]
        if tasks and finish:
            await asyncio.wait(tasks, timeout=5)
        for _ in range(50):
            await asyncio.sleep(0)

    def responses(self) -> list[Answer]:
        """The complete responses written since the last call, parsed."""
        parser = h11.Connection(h11.CLIENT)
        # h11 keeps one exchange per cycle: parse each response by starting a fresh request cycle.
        data = bytes(self.transport.written[self._read :])
        answers: list[Answer] = []
        while data:
            parser = h11.Connection(h11.CLIENT)
            parser.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
            parser.send(h11.EndOfMessage())
            parser.receive_data(data)
            status, headers, body = 0, [], b""
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    return answers  # an incomplete response: wait for more
                if isinstance(event, h11.Response):
                    status, headers = event.status_code, list(event.headers)
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
            answers.append(Answer(status, headers, body))
            leftover, _ = parser.trailing_data
            self._read = len(self.transport.written) - len(leftover)
            data = bytes(leftover)
        return answers


def connect(gateway: AppGateway, timers: FakeTimers, *, peer: str = "127.0.0.1") -> Connection:
    """A new client connection to ``gateway``'s public listener, as uvicorn would make it."""
    config = gateway.config
    protocol_type = _protocol_types.get(id(gateway.app))
    if protocol_type is None:
        protocol_type = protocol_class(config.limits, config.error_profile, gateway.app.rules, gateway.app.ledger)
        _protocol_types[id(gateway.app)] = protocol_type
    uvicorn_config = Config(
        app=gateway.app,
        http=protocol_type,
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        date_header=False,
        access_log=False,
        log_config=None,
        timeout_keep_alive=config.limits.keepalive_timeout,  # type: ignore[arg-type]
    )
    uvicorn_config.load()
    state = _server_states.setdefault(id(gateway.app), ServerState())
    protocol = protocol_type(config=uvicorn_config, server_state=state, app_state={}, _loop=cast(Any, timers))
    transport = FakeTransport(peer)
    transport.set_protocol(protocol)
    protocol.connection_made(cast(asyncio.Transport, transport))
    return Connection(protocol, transport, timers)


# One protocol class and one server state per app, as one uvicorn server has.
_protocol_types: dict[int, type[GatewayHttpProtocol]] = {}
_server_states: dict[int, ServerState] = {}
