"""The upstream stub: a tiny product-mockup API plus test tools, as one ASGI app.

``create_app(profile=..., render_delay=..., test_tools=...)``: the error shape of the API it imitates
(``upstream_stub.dialects``: ``mockly`` or ``mockupanda``), how long a mockup takes to render, and
whether the test tools below are served at all (off unless asked for, as the real API has none).

Routing (``StubApp.__call__``): paths under ``/api/`` (and, with the test tools, ``/__stub/``) go to a
Starlette app; with the test tools, every other path, and ``/__stub/echo`` with anything below it, goes to
the echo, a plain ASGI function that sees the request exactly as the server parsed it (``raw_path``,
header order, body bytes). Without them, every other path is the API's 404.

Mockup API (JSON; errors in the profile's shape, see ``upstream_stub.dialects``):

- ``GET /api/v1/templates`` -> ``{"data": [template, ...]}``: the Mockly-style ``tpl_*`` templates and
  the ones Mockupanda's documentation uses in its examples (``bedroom-poster-01``, ``wall-diptych-01``)
- ``GET /api/v1/templates/{id}`` -> ``{"data": template}`` or 404
- ``POST /api/v1/mockups/generate`` ``{"template_id", "artwork_url"}`` -> 201 ``{"data": mockup}`` after
  the render delay, or 400 (Mockupanda: 404 for an unknown template)
- ``GET /api/v1/mockups`` -> ``{"data": [mockup, ...]}``, the caller's own, newest first
- ``GET /api/v1/mockups/{id}`` -> ``{"data": mockup}`` or 404
- any other ``/api/`` path -> 404 ("No such endpoint"); a known path with the wrong method -> 405 with
  ``Allow``.

Mockups belong to the user named by ``X-User-Id`` (the header the gateway sets; without it, an
anonymous user of its own): a user lists and gets only its own, and another user's mockup answers
exactly as an unknown one does.

Routes other than the echo answer CORS like a browser-facing API does (Starlette's CORSMiddleware,
any origin): ``Access-Control-Allow-Origin`` when the request has an ``Origin``, and preflights.

Test tools (``test_tools=True``, ``upstream-stub --test-tools``):

- ``/__stub/echo[/...]`` and any path outside ``/api/`` and ``/__stub/``, every method: streams the
  request body through SHA-256 and answers ``{"method", "raw_path", "query_string", "headers",
  "body_length", "body_sha256", "http_version", "client"}``. HEAD gets the Content-Length only.
- ``GET /__stub/bytes/{n}?chunk=65536&chunked=0``: n bytes where byte ``i`` is ``i % 251``, i.e.
  ``bytes(range(251))`` repeated and cut to length. 251 is prime, so the pattern never lines up with a
  power-of-two chunk or buffer size, and a dropped, repeated or reordered chunk changes the digest.
- ``GET /__stub/slow?delay=S&body_delay=S``: waits ``delay`` before the headers and ``body_delay``
  between the headers and the body; answers ``{"slept": delay + body_delay}``.
- ``GET /__stub/redirect?to=URL&status=302``, ``GET /__stub/cookies``, ``/__stub/status/{code}`` (every
  method), ``GET /__stub/gzip`` (pre-compressed body, ``Content-Encoding: gzip``).
- ``GET /__stub/reset?after=1024&chunked=0``: promises ``after * 4`` bytes, sends ``after``, then breaks
  the connection (``StubReset``; install ``QuietResetFilter`` on ``uvicorn.error`` to hide it).
- ``GET /__stub/received`` -> ``{"requests": [{"method", "raw_path", "request_id"}, ...]}``: the last
  1000 echo requests whose body arrived completely, oldest first. ``DELETE`` clears it.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import http
import json
import logging
import math
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypedDict
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from upstream_stub import dialects
from upstream_stub.dialects import PROFILES, ProfileName, error_response

__all__ = ["QuietResetFilter", "StubApp", "StubReset", "app", "create_app"]

PATTERN_PERIOD = 251
DEFAULT_CHUNK = 65536
MAX_CHUNK = 16 * 1024 * 1024
RECEIVED_LIMIT = 1000
# Benchmarks may POST millions of mockups; keep the newest so a long run doesn't grow without bound.
MOCKUP_LIMIT = 100_000
CDN_BASE = "https://cdn.example.test/mockups"


class Template(TypedDict):
    id: str
    name: str
    category: str
    width: int
    height: int


class Mockup(TypedDict):
    id: str
    template_id: str
    artwork_url: str
    status: str
    image_url: str
    created_at: str


class ReceivedRecord(TypedDict):
    method: str
    raw_path: str
    request_id: str | None


TEMPLATES: dict[str, Template] = {
    t["id"]: t
    for t in (
        Template(id="tpl_tshirt", name="Classic T-Shirt", category="apparel", width=4500, height=5400),
        Template(id="tpl_mug", name="Ceramic Mug 11oz", category="drinkware", width=2700, height=1100),
        Template(id="tpl_poster", name="Matte Poster 18x24", category="wall-art", width=5400, height=7200),
        # The templates of Mockupanda's documented examples: its own curl works against the stub.
        Template(id="bedroom-poster-01", name="Bedroom Poster", category="poster", width=4000, height=6000),
        Template(id="wall-diptych-01", name="Wall Diptych", category="wall-art", width=4000, height=6000),
    )
}

# Uncompressed body of /__stub/gzip: a few KB, so compression visibly changes the size.
GZIP_PAYLOAD = {"compressed": True, "padding": "The quick brown fox jumps over the lazy dog. " * 100}


class StubReset(Exception):
    """Raised on purpose from a streaming body to make the server drop the connection mid-response."""


class QuietResetFilter(logging.Filter):
    """Drops the "Exception in ASGI application" record that a deliberate ``StubReset`` produces."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BaseExceptionGroup):
            # Task groups may wrap it; hide the record only when nothing else is in the group.
            _, rest = exc.split(StubReset)
            return rest is not None
        return not isinstance(exc, StubReset)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise HTTPException(400, f"{name} must be between {low} and {high}")
    return value


def _float_param(request: Request, name: str) -> float:
    raw = request.query_params.get(name, "0")
    try:
        value = float(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise HTTPException(400, f"{name} must be a finite, non-negative number of seconds")
    return value


def _flag_param(request: Request, name: str) -> bool:
    return request.query_params.get(name, "0") not in ("", "0", "false", "no")


def _pattern_block(size: int) -> memoryview:
    """A buffer of the i % 251 pattern holding any ``size``-byte window that starts inside the first period."""
    return memoryview(bytes(range(PATTERN_PERIOD)) * (size // PATTERN_PERIOD + 2))


async def _pattern_stream(total: int, chunk: int) -> AsyncIterator[memoryview]:
    block = _pattern_block(chunk)
    offset = 0
    while offset < total:
        size = min(chunk, total - offset)
        start = offset % PATTERN_PERIOD
        # Zero-copy slices of one shared buffer: memory stays flat however large ``total`` is.
        yield block[start : start + size]
        offset += size


async def _empty_stream() -> AsyncIterator[bytes]:
    # HEAD: the headers describe a body we won't send, so don't generate one (uvicorn would drop it anyway).
    return
    yield


# -- the echo ---------------------------------------------------------------------------------------------


class Echo:
    """Answers with the request as the server saw it, hashing the body as it streams in."""

    def __init__(self, received: deque[ReceivedRecord]) -> None:
        self.received = received

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        digest = hashlib.sha256()
        length = 0
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                # The client went away mid-body: nobody to answer, and the request never fully arrived.
                return
            body: bytes = message.get("body", b"")
            digest.update(body)
            length += len(body)
            more_body = message.get("more_body", False)

        headers = [[name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]]
        raw_path_bytes: bytes | None = scope.get("raw_path")
        raw_path = raw_path_bytes.decode("latin-1") if raw_path_bytes is not None else scope["path"]
        request_id = next((value for name, value in headers if name.lower() == "x-request-id"), None)
        self.received.append(ReceivedRecord(method=scope["method"], raw_path=raw_path, request_id=request_id))

        client = scope.get("client")
        payload = {
            "method": scope["method"],
            "raw_path": raw_path,
            "query_string": scope.get("query_string", b"").decode("latin-1"),
            "headers": headers,
            "body_length": length,
            "body_sha256": digest.hexdigest(),
            "http_version": scope.get("http_version", "1.1"),
            "client": list(client) if client else None,
        }
        content = json.dumps(payload, separators=(",", ":")).encode()
        response_headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else content})


# -- test tools without state -------------------------------------------------------------------------------


async def stream_bytes(request: Request) -> Response:
    n: int = request.path_params["n"]
    chunk = _int_param(request, "chunk", DEFAULT_CHUNK, 1, MAX_CHUNK)
    headers = {} if _flag_param(request, "chunked") else {"content-length": str(n)}
    content = _empty_stream() if request.method == "HEAD" else _pattern_stream(n, chunk)
    return StreamingResponse(content, headers=headers, media_type="application/octet-stream")


async def _sleep_unless_disconnected(request: Request, seconds: float) -> None:
    """Sleep, but stop early if the client goes away.

    Without this, a request the proxy gave up on keeps its task sleeping, and uvicorn's graceful shutdown
    waits for it ("Waiting for background tasks to complete").
    """

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({sleeper, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        watcher.cancel()


async def slow(request: Request) -> Response:
    delay = _float_param(request, "delay")
    body_delay = _float_param(request, "body_delay")
    await _sleep_unless_disconnected(request, delay)
    body = json.dumps({"slept": delay + body_delay}, separators=(",", ":")).encode()
    if not body_delay:
        return Response(body, media_type="application/json")

    async def stalled_body() -> AsyncIterator[bytes]:
        await asyncio.sleep(body_delay)
        yield body

    # Content-Length is sent with the headers, so the client knows a body is owed while it stalls.
    headers = {"content-length": str(len(body))}
    return StreamingResponse(stalled_body(), headers=headers, media_type="application/json")


async def redirect(request: Request) -> Response:
    to = request.query_params.get("to")
    if not to:
        raise HTTPException(400, "to is required")
    if not to.isprintable() or not to.isascii():
        raise HTTPException(400, "to must be printable ASCII")
    status = _int_param(request, "status", 302, 300, 399)
    return JSONResponse({"location": to}, status_code=status, headers={"location": to})


async def cookies(request: Request) -> Response:
    response = JSONResponse({"cookies": ["a", "b", "c"]})
    # Three separate header lines on purpose: a proxy must not fold them into one (RFC 6265 §3).
    for cookie in (b"a=1; Path=/", b"b=2; Path=/; HttpOnly", b"c=3; Path=/; Secure"):
        response.raw_headers.append((b"set-cookie", cookie))
    return response


async def status(request: Request) -> Response:
    code: int = request.path_params["code"]
    if not 200 <= code <= 599:
        raise HTTPException(400, "code must be between 200 and 599")
    if code in (204, 205, 304):
        return Response(status_code=code)
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return JSONResponse({"status": code, "phrase": phrase}, status_code=code)


async def headers(request: Request) -> Response:
    response = JSONResponse({})
    for name, value in request.query_params.multi_items():
        response.raw_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    return response


def _gzip_response(compressed: bytes) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return Response(compressed, media_type="application/json", headers={"content-encoding": "gzip"})

    return endpoint


async def reset(request: Request) -> Response:
    after = _int_param(request, "after", 1024, 1, MAX_CHUNK)
    headers = {} if _flag_param(request, "chunked") else {"content-length": str(after * 4)}

    async def broken_body() -> AsyncIterator[bytes]:
        yield bytes(_pattern_block(after)[:after])
        # send() has written the chunk to the transport; yield to the loop once more so it is on its way,
        # then fail. uvicorn closes the transport (flushing what it holds) without the rest or a last chunk.
        await asyncio.sleep(0)
        raise StubReset(f"deliberate reset after {after} bytes")

    if request.method == "HEAD":
        return StreamingResponse(_empty_stream(), headers=headers, media_type="application/octet-stream")
    return StreamingResponse(broken_body(), headers=headers, media_type="application/octet-stream")


class _AnyMethod:
    """Wraps a request endpoint as an ASGI app: Starlette limits plain functions to GET/HEAD by default."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


# -- the app ------------------------------------------------------------------------------------------------


class StubApp:
    """The whole stub. All state (mockups per user, received log) lives on the instance."""

    def __init__(self, profile: ProfileName = "mockly", render_delay: float = 0.0, test_tools: bool = False) -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
        if not math.isfinite(render_delay) or render_delay < 0:
            raise ValueError(f"render_delay: expected a finite, non-negative number of seconds, got {render_delay!r}")
        self.profile: ProfileName = profile
        self.render_delay = render_delay
        self.test_tools = test_tools
        # Mockups per user (X-User-Id), and every (user, id) oldest first, for MOCKUP_LIMIT.
        self.mockups: dict[str, dict[str, Mockup]] = {}
        self._created: deque[tuple[str, str]] = deque()
        self.received: deque[ReceivedRecord] = deque(maxlen=RECEIVED_LIMIT)
        self.echo = Echo(self.received)
        routes = [
            Route("/api/v1/templates", self.list_templates),
            Route("/api/v1/templates/{template_id}", self.get_template),
            Route("/api/v1/mockups", self.list_mockups),
            Route("/api/v1/mockups/generate", self.generate_mockup, methods=["POST"]),
            Route("/api/v1/mockups/{mockup_id}", self.get_mockup),
        ]
        if test_tools:
            # mtime=0: the same bytes every run, so tests can compare digests.
            compressed = gzip.compress(json.dumps(GZIP_PAYLOAD).encode(), mtime=0)
            routes += [
                Route("/__stub/bytes/{n:int}", stream_bytes),
                Route("/__stub/slow", slow),
                Route("/__stub/redirect", redirect),
                Route("/__stub/cookies", cookies),
                Route("/__stub/status/{code:int}", _AnyMethod(status)),
                Route("/__stub/gzip", _gzip_response(compressed)),
                Route("/__stub/headers", headers),
                Route("/__stub/reset", reset),
                Route("/__stub/received", self.list_received, methods=["GET", "DELETE"]),
            ]
        self.routes = Starlette(
            routes=routes,
            exception_handlers={HTTPException: self._http_exception},
            # Like the real service: CORS for browsers, so tests can see the gateway remove it.
            middleware=[Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.test_tools and self._is_echo(scope["path"]):
            await self.echo(scope, receive, send)
        else:
            await self.routes(scope, receive, send)

    @staticmethod
    def _is_echo(path: str) -> bool:
        if path == "/__stub/echo" or path.startswith("/__stub/echo/"):
            return True
        return not path.startswith(("/api/", "/__stub/"))

    def _error(self, fault: dialects.Fault, message: str, details: Mapping[str, Any] | None = None) -> JSONResponse:
        return error_response(self.profile, fault, message, details=details)

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        # The router raises 404/405 here; our own parameter checks raise 400. All share the API's envelope.
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return error_response(self.profile, dialects.NO_ENDPOINT, "No such endpoint")
        if exc.status_code == 405:
            return error_response(self.profile, dialects.METHOD_NOT_ALLOWED, "Method not allowed", headers=exc.headers)
        return error_response(self.profile, dialects.BAD_REQUEST, exc.detail, headers=exc.headers)

    async def list_templates(self, request: Request) -> Response:
        return JSONResponse({"data": list(TEMPLATES.values())})

    async def get_template(self, request: Request) -> Response:
        template = TEMPLATES.get(request.path_params["template_id"])
        if template is None:
            return self._error(dialects.TEMPLATE_NOT_FOUND, "Template not found")
        return JSONResponse({"data": template})

    async def generate_mockup(self, request: Request) -> Response:
        try:
            body: Any = json.loads(await request.body())
        except ValueError:
            return self._error(dialects.BAD_REQUEST, "Request body is not valid JSON")
        if not isinstance(body, dict):
            return self._error(dialects.BAD_REQUEST, "Request body must be a JSON object")
        for field, missing in (
            ("template_id", dialects.MISSING_TEMPLATE_ID),
            ("artwork_url", dialects.MISSING_ARTWORK),
        ):
            if field not in body:
                return self._error(missing, f"{field} is required")
            if not isinstance(body[field], str):
                return self._error(dialects.BAD_REQUEST, f"{field} must be a string")
        template_id: str = body["template_id"]
        artwork_url: str = body["artwork_url"]
        if template_id not in TEMPLATES:
            details = {"template_id": template_id}
            return self._error(dialects.UNKNOWN_TEMPLATE, f"Unknown template_id: {template_id}", details)
        parts = urlsplit(artwork_url)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            return self._error(dialects.INVALID_ARTWORK_URL, "artwork_url must be an absolute http(s) URL")

        if self.render_delay:
            # Rendering takes time; a client that gives up meanwhile gets no mockup (and holds no task).
            await _sleep_unless_disconnected(request, self.render_delay)
        mockup_id = f"mk_{secrets.token_hex(12)}"
        mockup = Mockup(
            id=mockup_id,
            template_id=template_id,
            artwork_url=artwork_url,
            status="completed",
            image_url=f"{CDN_BASE}/{mockup_id}.png",
            created_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        )
        self._keep(_user(request), mockup)
        return JSONResponse({"data": mockup}, status_code=201)

    def _keep(self, user: str, mockup: Mockup) -> None:
        if len(self._created) >= MOCKUP_LIMIT:
            # The oldest mockup of all users goes first.
            old_user, old_id = self._created.popleft()
            owned = self.mockups[old_user]
            del owned[old_id]
            if not owned:
                del self.mockups[old_user]
        self.mockups.setdefault(user, {})[mockup["id"]] = mockup
        self._created.append((user, mockup["id"]))

    async def list_mockups(self, request: Request) -> Response:
        owned = self.mockups.get(_user(request), {})
        return JSONResponse({"data": list(reversed(owned.values()))})

    async def get_mockup(self, request: Request) -> Response:
        # Another user's mockup is answered exactly as one that does not exist.
        mockup = self.mockups.get(_user(request), {}).get(request.path_params["mockup_id"])
        if mockup is None:
            return self._error(dialects.MOCKUP_NOT_FOUND, "Mockup not found")
        return JSONResponse({"data": mockup})

    async def list_received(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.received.clear()
            return Response(status_code=204)
        return JSONResponse({"requests": list(self.received)})


def _user(request: Request) -> str:
    """Whose mockups these are: the X-User-Id the gateway sets ("" without one, an anonymous user)."""
    return request.headers.get("x-user-id", "")


def create_app(profile: ProfileName = "mockly", render_delay: float = 0.0, test_tools: bool = False) -> StubApp:
    """A fresh stub with empty state: ``profile``'s error shape, ``render_delay`` seconds per mockup,
    the ``/__stub/`` test tools and the echo only with ``test_tools``."""
    return StubApp(profile=profile, render_delay=render_delay, test_tools=test_tools)


app = create_app()
