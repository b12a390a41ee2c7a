"""The upstream hop's contract, which each HTTP client implementation meets (``auto.py`` chooses).

The design notes: docs/internals.md, "gateway/upstream/base.py"."""

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
