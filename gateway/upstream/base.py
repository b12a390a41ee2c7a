"""The upstream hop's contract, which each HTTP client implementation meets (``auto.py`` chooses).

An ``UpstreamClient`` sends one request (the raw request target, headers already rewritten, the
whole body as bytes, or as blocks read back from a file with its Content-Length among the headers)
and returns an ``UpstreamResponse`` as soon as the status and headers have arrived.

A connection goes back to the pool only when the request was sent whole and its response read
to the end; in every other case (the client left, a timeout, a response abandoned midway) it is
closed, so that no byte of one exchange can ever be read as part of the next.

Each implementation translates its library's exceptions exactly once, here at the boundary:
before the response, to ``UpstreamUnavailable`` (502) or ``UpstreamTimeout`` (504); while the
body is being read, to ``UpstreamAborted``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

__all__ = ["UpstreamClient", "UpstreamResponse"]


class UpstreamResponse(Protocol):
    status: int
    # As received, hop-by-hop headers included (the proxy removes them).
    headers: list[tuple[bytes, bytes]]
    content_length: int | None

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None:
        """Give the connection back to the pool if the exchange is complete, else close it."""


class UpstreamClient(Protocol):
    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | None,
    ) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...
