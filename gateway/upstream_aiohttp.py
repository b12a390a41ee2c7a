"""The upstream hop on aiohttp (see ``upstream.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import aiohttp
from yarl import URL

from gateway.config import UpstreamConfig
from gateway.errors import UpstreamAborted, UpstreamTimeout, UpstreamUnavailable

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


class _Response:
    __slots__ = ("_response", "content_length", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: list[tuple[bytes, bytes]] = list(response.raw_headers)
        self.content_length = response.content_length

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnavailable(f"upstream broke off the response: {exc!r}") from exc

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamAborted(repr(exc)) from exc

    async def aclose(self) -> None:
        self._response.release()


class AiohttpUpstream:
    def __init__(self, config: UpstreamConfig) -> None:
        self._base = config.url
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.max_connections, limit_per_host=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=None, connect=config.connect_timeout, sock_read=config.read_timeout),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            request_class=_VerbatimRequest,
        )

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterable[bytes] | None,
    ) -> _Response:
        # encoded=True: the target goes out byte for byte, dot segments and %2F included.
        url = URL(self._base + target, encoded=True)
        # A plain list: aiohttp copies headers into its own CIMultiDict anyway.
        header_list = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
        try:
            response = await self._session.request(
                method, url, headers=header_list, data=body, allow_redirects=False, compress=None
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamUnavailable(f"connecting to the upstream timed out: {exc!r}") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"the upstream did not answer in time: {exc!r}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"upstream request failed: {exc!r}") from exc
        return _Response(response)

    async def aclose(self) -> None:
        await self._session.close()
