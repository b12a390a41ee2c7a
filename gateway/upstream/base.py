"""The upstream hop's contract, which each HTTP client implementation meets (``auto.py`` chooses).

The design notes: docs/internals.md, "gateway/upstream/base.py"."""

from __future__ import annotations

import re
import select
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

__all__ = [
    "UpstreamClient",
    "UpstreamResponse",
    "UnreadBytes",
    "carries_request_id",
    "describe_failure",
    "frames_a_body_it_cannot_have",
    "leaves_bytes_behind",
]


class UpstreamResponse(Protocol):
    status: int
    # As received, hop-by-hop headers included (the proxy removes them).
    headers: list[tuple[bytes, bytes]]
    content_length: int | None

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None:
        """Give the connection back to the pool if the exchange is complete, else close it."""

    async def abandon(self) -> None:
        """Close the connection, whatever was read: this answer cannot be trusted."""


class UpstreamClient(Protocol):
    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | None,
    ) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


_QUERY = re.compile(r"\?[^\s'\"]*")
_BYTES_LITERAL = re.compile(r"b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\"")


def describe_failure(exc: BaseException) -> str:
    """An HTTP client library's exception as the log may show it: its type and message, never the
    request it was about. (aiohttp's repr of a response error carries the URL, query string
    included, and every request header, the key among them with upstream.forward_authorization.)"""
    # An aiohttp response error's str() is its repr's content; its own message is what went wrong.
    message = getattr(exc, "message", None) if hasattr(exc, "request_info") else None
    text = str(exc if message is None else message)
    # A query string may carry secrets (?api_key=...), and a URL in a message may hold one.
    text = _QUERY.sub("?...", text)
    # aiohttp's parse errors quote the bytes they choked on (the answer's content) over several
    # lines: neither belongs in a one-line log.
    text = " ".join(_BYTES_LITERAL.sub("b'...'", text).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def carries_request_id(headers: list[tuple[bytes, bytes]], request_id: bytes) -> bool:
    """Whether an answer's head carries exactly this request's X-Request-Id (upstream.check_request_id):
    an answer without it is another request's, or nobody's, and its connection is out of step."""
    ids = [value.strip() for name, value in headers if name.lower() == b"x-request-id"]
    return ids == [request_id]


def leaves_bytes_behind(status: int, headers: list[tuple[bytes, bytes]], *, sent_body: bool) -> bool:
    """Whether an answer's connection must carry no other exchange, whichever client read it:
    its head frames a body its status forbids (below), or it refuses (not 2xx) a request that had
    a body, which the upstream may not have read and would read as the next request (with
    whatever identity its bytes claim)."""
    return frames_a_body_it_cannot_have(status, headers) or (sent_body and not 200 <= status < 300)


def frames_a_body_it_cannot_have(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether an answer announces a body that its status forbids: a 204 or 304 with a
    Content-Length above zero or a Transfer-Encoding. Such a body may still come later, and would be
    read as the next exchange's answer: the connection must not carry another one. (A 304's
    Content-Length may be the representation's, as RFC 9110 allows; its connection is closed all
    the same, since a 304 is rare and a late body there would reach another client.)"""
    if status not in (204, 304):
        return False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding" or (lowered == b"content-length" and value.strip(b" 0")):
            return True
    return False


class UnreadBytes:
    """Whether bytes, or the end of the connection, have reached a pooled connection's socket that
    the event loop has not read yet: asked before the connection carries another exchange.

    A connection goes back to the pool the moment its answer ends. An upstream that writes an
    answer nobody asked for right behind it (a desync, a bug) has those bytes in the kernel's
    buffer already, but the loop reads them only at its next poll, and under load another request
    takes the connection first and would read them as its own answer. One ``poll(0)`` on the
    socket (0.6 µs, against 4.5 for a ``MSG_PEEK`` that raises when there is nothing) sees them
    without reading them. Not over TLS, where a record the TLS layer keeps for itself (a session
    ticket) would close good connections; bytes that come later than this look are what
    ``upstream.check_request_id`` is for."""

    __slots__ = ("_poll",)

    def __init__(self, transport: object) -> None:
        self._poll: select.poll | None = None
        get_extra_info = getattr(transport, "get_extra_info", None)
        if get_extra_info is None or get_extra_info("sslcontext") is not None:
            return
        sock = get_extra_info("socket")
        if sock is not None:
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)

    def waiting(self) -> bool:
        return self._poll is not None and bool(self._poll.poll(0))
