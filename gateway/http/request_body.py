"""A request body read whole before the upstream is contacted, as nginx's ``proxy_request_buffering``.

The design notes: docs/internals.md, "gateway/http/request_body.py"."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator
from typing import IO

from gateway.errors import InternalError, PayloadTooLarge, RequestTimeout
from gateway.types import Receive

__all__ = ["BufferedBody", "ClientDisconnected", "read_body"]

logger = logging.getLogger("gateway.error")

# Parts gathered in memory before each write to the temporary file, and the size of each read back.
_FILE_BLOCK = 256 * 1024


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


class BufferedBody:
    """A complete request body: ``length`` bytes, in memory (``content``) or in a temporary file."""

    __slots__ = ("_file", "content", "length")

    def __init__(self, content: bytes, length: int, file: IO[bytes] | None = None) -> None:
        self.content = content
        self.length = length
        self._file = file

    def payload(self) -> bytes | AsyncIterator[bytes]:
        """What to send upstream: the bytes, or the blocks read back from the file."""
        return self.content if self._file is None else self._read_back(self._file)

    async def _read_back(self, file: IO[bytes]) -> AsyncIterator[bytes]:
        """The body, read back from its file in blocks (each read in a worker thread)."""
        await asyncio.to_thread(file.seek, 0)
        while True:
            block = await asyncio.to_thread(file.read, _FILE_BLOCK)
            if not block:
                return
            yield block

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def read_body(receive: Receive, *, limit: int, memory: int, idle: float) -> BufferedBody:
    """Read the whole request body (see the module docstring for what can stop it)."""
    parts: list[bytes] = []
    size = 0
    kept = 0  # bytes in ``parts``
    file: IO[bytes] | None = None
    try:
        while True:
            try:
                async with asyncio.timeout(idle):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout("no request body data for limits.body_idle_timeout") from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunk: bytes = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(limit)
                parts.append(chunk)
                kept += len(chunk)
                if size > memory and kept >= _FILE_BLOCK:
                    if file is None:
                        file = await _temporary_file()
                    await _write(file, parts)
                    parts, kept = [], 0
            if not message.get("more_body", False):
                break
        if file is None:
            return BufferedBody(parts[0] if len(parts) == 1 else b"".join(parts), size)
        if parts:
            await _write(file, parts)
        return BufferedBody(b"", size, file)
    except BaseException:
        if file is not None:
            file.close()
        raise


async def _temporary_file() -> IO[bytes]:
    try:
        return await asyncio.to_thread(tempfile.TemporaryFile, prefix="gateway-body-")
    except OSError as exc:
        logger.error("cannot buffer a request body in a temporary file: %s", exc)
        raise InternalError(f"cannot buffer the request body: {exc}") from None


async def _write(file: IO[bytes], parts: list[bytes]) -> None:
    try:
        await asyncio.to_thread(file.write, b"".join(parts))
    except OSError as exc:
        logger.error("cannot buffer a request body in a temporary file: %s", exc)
        raise InternalError(f"cannot buffer the request body: {exc}") from None
