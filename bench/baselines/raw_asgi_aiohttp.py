"""Plain-proxy baseline: a raw ASGI callable + one pooled aiohttp.ClientSession, no framework.

No Router, Request object, middleware stack or StreamingResponse task group: the lean ceiling
for a Python proxy on uvicorn, and so the head-room a hand-tuned gateway hot path could reach.
Forwarding rules are the minimum a correct transparent proxy needs: request and response
bodies are streamed, hop-by-hop headers (RFC 9110 §7.6.1) and Host are dropped, and
X-Forwarded-For is added. No auth, no rate limit.

Run: uvicorn baselines.raw_asgi_aiohttp:app --app-dir bench (cwd-independent). Env:
BENCH_UPSTREAM (default http://127.0.0.1:18080), BENCH_POOL (connections, default 100).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:18080").rstrip("/")
POOL = int(os.environ.get("BENCH_POOL", "100"))

# Request headers never forwarded: hop-by-hop, plus Host (the client sets the upstream's).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)
# Response headers never copied back. Content-Length is kept, so uvicorn sends a
# fixed-length body instead of chunking.
RESP_HOP_BY_HOP = HOP_BY_HOP - {b"host"}


class ClientGone(Exception):
    """The downstream client disconnected while its request body was being forwarded."""


class _State:
    session: aiohttp.ClientSession | None = None


def make_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=POOL, limit_per_host=POOL, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(total=30),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _State.session = make_session()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _State.session is not None:
                await _State.session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    session = _State.session
    assert session is not None, "the lifespan did not run"

    headers: list[tuple[str, str]] = []
    has_body = False
    for name, value in scope["headers"]:
        if name in HOP_BY_HOP:
            has_body = has_body or name == b"transfer-encoding"
            continue
        if name == b"content-length" and value != b"0":
            has_body = True
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    client = scope.get("client")
    if client:
        headers.append(("x-forwarded-for", client[0]))
    path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = scope.get("query_string")
    url = UPSTREAM + path + ("?" + query.decode("latin-1") if query else "")

    async def request_body() -> AsyncIterator[bytes]:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    response = await session.request(
        scope["method"], url, headers=headers, data=request_body() if has_body else None, allow_redirects=False
    )
    try:
        response_headers = [(k.lower(), v) for k, v in response.raw_headers]
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(k, v) for k, v in response_headers if k not in RESP_HOP_BY_HOP],
            }
        )
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        response.release()
