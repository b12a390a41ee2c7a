"""Several uvicorn servers in one process and event loop, stopped together by one signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator

import uvicorn
from uvicorn.config import STARTUP_FAILURE

__all__ = ["run_servers"]

logger = logging.getLogger("gateway")


class _SharedSignals(uvicorn.Server):
    """A uvicorn server that leaves signals to ``run_servers``, which stops every server on one,
    and tells it when it has started (``run_servers`` says so once for them all)."""

    def __init__(self, config: uvicorn.Config, started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


def run_servers(
    configs: list[uvicorn.Config],
    sockets: list[socket.socket] | None = None,
    *,
    role: str = "process",
    listeners: str = "",
) -> None:
    """Serve several listeners in one process and event loop (on ``sockets``, one for each, if
    given: a worker of ``serve --workers``); SIGTERM or SIGINT stops them all gracefully (each runs
    its lifespan shutdown, which writes the last usage), and a second SIGINT (Ctrl-C twice) forces
    the exit, except in a worker, whose parent decides that. A SIGTERM after a SIGINT does not: a
    terminal's Ctrl-C and then a script's or a service manager's SIGTERM is one request to stop.

    The process's start and stop are logged once each (uvicorn's own lines, which every server
    repeats, are dropped: ``logs.DropServerLifecycle``), naming it by ``role`` and ``listeners``."""
    pid = os.getpid()

    def started() -> None:
        if all(server.started for server in servers):
            logger.info("started %s %d (%s)", role, pid, listeners)

    servers = [_SharedSignals(config, started) for config in configs]
    listening = [None] * len(servers) if sockets is None else [[sock] for sock in sockets]

    async def serve_all() -> None:
        loop = asyncio.get_running_loop()

        def stop(signum: int | None = None) -> None:
            if not any(server.should_exit for server in servers):
                why = f"on {signal.Signals(signum).name}" if signum is not None else "as a server failed to start"
                grace = configs[0].timeout_graceful_shutdown
                limit = "no limit" if grace is None else f"{grace:g}s"
                logger.info("shutting down %s %d %s: requests in flight have %s to finish", role, pid, why, limit)
            for server in servers:
                if server.should_exit and signum == signal.SIGINT and sockets is None:
                    server.force_exit = True
                server.should_exit = True

        async def serve_one(server: _SharedSignals, given: list[socket.socket] | None) -> None:
            await server.serve(given)
            if not server.started:  # its start-up failed: the others stop too
                stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig)
        await asyncio.gather(*(serve_one(server, given) for server, given in zip(servers, listening, strict=True)))

    with asyncio.Runner(loop_factory=configs[0].get_loop_factory()) as runner:
        runner.run(serve_all())
    if not all(server.started for server in servers):
        sys.exit(STARTUP_FAILURE)
    logger.info("stopped %s %d", role, pid)
