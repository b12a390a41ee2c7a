"""The access log: one JSON line per request on the public listener, on stdout.

The design notes: docs/internals.md, "gateway/accounting/access_log.py"."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Iterator
from typing import Final

__all__ = ["AccessLog"]

logger = logging.getLogger("gateway.error")

MAX_PENDING: Final = 100_000
# How long lines gather after the first one: the log lags by at most this. Each hand-over to the
# writer thread costs a GIL switch that stalls the loop, so rarer is cheaper: at 20 ms the access
# log cost about 8% of throughput in bench/run.sh, at 200 ms about 1 to 2% (its noise).
BATCH_SECONDS: Final = 0.2

_escape = json.encoder.encode_basestring_ascii


def _optional(value: str | None) -> str:
    return "null" if value is None else _escape(value)


class AccessLog:
    """Formats access-log lines on the event loop and writes them from a thread (see above)."""

    def __init__(self, fd: int = 1) -> None:
        self._fd = fd
        self._batch: list[str] = []
        self._flush_scheduled = False
        # Lines handed to the writer, and lines it has written: each counter has one writing thread.
        self._queued_lines = 0
        self._written_lines = 0
        self._blocks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.dropped = 0
        self._reported = 0
        self._second = -1
        self._second_text = ""
        self._thread = threading.Thread(target=self._write_forever, name="access-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write every pending line, then stop the writer (waiting at most ``timeout`` for a stuck stdout).
        Called from a thread other than the event loop's once the loop serves no more requests."""
        self._flush()
        self._blocks.put(None)
        self._thread.join(timeout)

    def record(
        self,
        *,
        request_id: str,
        method: str,
        raw_path: bytes,
        status: int,
        outcome: str,
        duration: float,
        upstream: float | None,
        key_id: str | None,
        user_id: str | None,
        observed: str | None = None,
    ) -> None:
        batch = self._batch
        if self._queued_lines - self._written_lines + len(batch) >= MAX_PENDING:
            self.dropped += 1
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        upstream_ms = "null" if upstream is None else f"{upstream * 1000:.3f}"
        batch.append(
            f'{{"ts":"{self._second_text}.{int((now - second) * 1000):03d}Z","request_id":"{request_id}",'
            f'"method":{_escape(method)},"path":{_escape(raw_path.decode("latin-1"))},"status":{status},'
            f'"outcome":"{outcome}","duration_ms":{duration * 1000:.3f},"upstream_ms":{upstream_ms},'
            f'"key_id":{_optional(key_id)},"user_id":{_optional(user_id)},"observed":{_optional(observed)}}}\n'
        )
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(BATCH_SECONDS, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch = self._batch
        if batch:
            self._batch = []
            self._queued_lines += len(batch)
            self._blocks.put("".join(batch).encode())
        if self.dropped > self._reported:
            logger.warning("access log: stdout is not keeping up; %d lines dropped so far", self.dropped)
            self._reported = self.dropped

    def _write_forever(self) -> None:
        while (block := self._blocks.get()) is not None:
            for piece in _whole_lines(block):
                self._write(piece)
            self._written_lines += block.count(b"\n")

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except InterruptedError:
                continue
            except OSError as exc:
                # stdout closed or broken: the log is lost, the gateway keeps serving.
                self.dropped += view.tobytes().count(b"\n")
                logger.warning("access log: cannot write to stdout: %s", exc)
                return
            view = view[written:]


def _whole_lines(block: bytes) -> Iterator[bytes]:
    """``block`` in pieces of whole lines, each at most PIPE_BUF bytes where its lines allow: a
    write that size to a pipe is atomic, so workers sharing one stdout never interleave lines."""
    start, size = 0, len(block)
    while size - start > select.PIPE_BUF:
        cut = block.rfind(b"\n", start, start + select.PIPE_BUF)
        if cut < 0:  # one line longer than PIPE_BUF: on its own
            cut = block.find(b"\n", start + select.PIPE_BUF)
            if cut < 0:
                break
        yield block[start : cut + 1]
        start = cut + 1
    if start < size:
        yield block[start:]
