"""The upstream hop on httpx (the contract is in ``base.py``); kept so ``bench/`` can compare the clients."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import httpx

from gateway.config import UpstreamConfig
from gateway.errors import UpstreamAborted, UpstreamTimeout, UpstreamUnavailable
from gateway.upstream.base import describe_failure

__all__ = ["HttpxUpstream"]


class _Response:
    __slots__ = ("_response", "content_length", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: list[tuple[bytes, bytes]] = list(response.headers.raw)
        length = response.headers.get("content-length")
        self.content_length = int(length) if length is not None and length.isdigit() else None

    async def read(self) -> bytes:
        try:
            return b"".join([chunk async for chunk in self._response.aiter_raw()])
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"upstream broke off the response: {describe_failure(exc)}") from exc

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise UpstreamAborted(describe_failure(exc)) from exc

    async def aclose(self) -> None:
        # httpcore keeps a connection only when both the request and the response went through
        # whole (h11's states are both DONE); any other is closed.
        await self._response.aclose()

    async def abandon(self) -> None:
        # Called before the body is read: httpcore closes a connection whose response is unfinished.
        await self._response.aclose()


class HttpxUpstream:
    def __init__(self, config: UpstreamConfig) -> None:
        self._base = httpx.URL(config.origin)  # the proxy puts the base path in the target
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=config.max_connections, max_keepalive_connections=config.max_connections
            ),
            timeout=httpx.Timeout(connect=config.connect_timeout, read=config.read_timeout, write=None, pool=None),
            follow_redirects=False,
            trust_env=False,
        )
        # httpx sends Accept, Accept-Encoding, Connection and User-Agent by default; the upstream
        # must see only what the client sent.
        self._client.headers.clear()

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | None,
    ) -> _Response:
        # httpx normalises dot segments in URLs; the "target" extension sends the raw target instead.
        request = self._client.build_request(
            method, self._base, headers=headers, content=body, extensions={"target": target.encode("latin-1")}
        )
        if body is None:
            # httpx declares "Content-Length: 0" on a bodiless POST, PUT or PATCH; the client sent none.
            request.headers.pop("content-length", None)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.ConnectTimeout as exc:
            raise UpstreamUnavailable(f"connecting to the upstream timed out: {describe_failure(exc)}") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"the upstream did not answer in time: {describe_failure(exc)}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"upstream request failed: {describe_failure(exc)}") from exc
        return _Response(response)

    async def aclose(self) -> None:
        await self._client.aclose()
