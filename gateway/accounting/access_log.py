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
from typing import Final, Protocol

__all__ = ["AccessLog", "Entry"]

logger = logging.getLogger("gateway.error")

MAX_PENDING: Final = 100_000
# How long lines gather after the first one: the log lags by at most this. Each hand-over to the
# writer thread costs a GIL switch that stalls the loop, so rarer is cheaper: at 20 ms the access
# log cost about 8% of throughput in bench/run.sh, at 200 ms about 1 to 2% (its noise).
BATCH_SECONDS: Final = 0.2
# A User-Agent is logged up to this many bytes (nginx and Envoy log it whole; a client chooses it).
MAX_USER_AGENT: Final = 256

_escape = json.encoder.encode_basestring_ascii


class Entry(Protocol):
    """What the access log reads of one request: the request path's ``Exchange``."""

    request_id: bytes
    client: str | None
    status: int
    outcome: str
    upstream_status: int | None
    upstream: float | None
    request_bytes: int
    response_bytes: int
    key_id: str | None
    user_id: str | None
    user_agent: bytes | None
    observed: str | None


class AccessLog:
    """Formats access-log lines on the event loop and writes them from a thread (see above)."""

    def __init__(self, fd: int = 1) -> None:
        self._fd = fd
        self._batch: list[str] = []
        self._flush_scheduled = False
        # Lines handed to the writer, and lines it has written: each counter has one writing thread.
        self._queued_lines = 0
        self._written_lines = 0
        # Blocks of lines and how many lines each holds; None: stop.
        self._blocks: queue.SimpleQueue[tuple[bytes, int] | None] = queue.SimpleQueue()
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

    def record(self, entry: Entry, method: str, raw_path: bytes, duration: float) -> None:
        """One line: ``entry`` (the request's ``Exchange``), its method and raw path, and the
        seconds it took. Read by attribute, formatted in one f-string: it runs for every request."""
        batch = self._batch
        if self._queued_lines - self._written_lines + len(batch) >= MAX_PENDING:
            self.dropped += 1
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        upstream, upstream_status, client = entry.upstream, entry.upstream_status, entry.client
        key_id, user_id, agent, observed = entry.key_id, entry.user_id, entry.user_agent, entry.observed
        # A header's bytes as latin-1 (each byte one character), then JSON-escaped: control and
        # non-ASCII bytes as \u00XX.
        batch.append(
            f'{{"ts":"{self._second_text}.{int((now - second) * 1000):03d}Z",'
            f'"request_id":"{entry.request_id.decode()}",'
            f'"client":{"null" if client is None else _escape(client)},"method":{_escape(method)},'
            f'"path":{_escape(raw_path.decode("latin-1"))},"status":{entry.status},"outcome":"{entry.outcome}",'
            f'"duration_ms":{duration * 1000:.3f},'
            f'"upstream_status":{"null" if upstream_status is None else upstream_status},'
            f'"upstream_ms":{"null" if upstream is None else f"{upstream * 1000:.3f}"},'
            f'"request_bytes":{entry.request_bytes},"response_bytes":{entry.response_bytes},'
            f'"key_id":{"null" if key_id is None else _escape(key_id)},'
            f'"user_id":{"null" if user_id is None else _escape(user_id)},'
            f'"user_agent":{"null" if agent is None else _escape(agent[:MAX_USER_AGENT].decode("latin-1"))},'
            f'"observed":{"null" if observed is None else _escape(observed)}}}\n'
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
            self._blocks.put(("".join(batch).encode(), len(batch)))
        if self.dropped > self._reported:
            logger.warning("access log: stdout is not keeping up; %d lines dropped so far", self.dropped)
            self._reported = self.dropped

    def _write_forever(self) -> None:
        while (item := self._blocks.get()) is not None:
            block, lines = item
            for piece in _whole_lines(block):
                self._write(piece)
            self._written_lines += lines

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
