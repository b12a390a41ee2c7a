"""Several uvicorn servers in one process and event loop, stopped together by one signal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn
from uvicorn.config import STARTUP_FAILURE

__all__ = ["run_servers"]


class _SharedSignals(uvicorn.Server):
    """A uvicorn server that leaves signals to ``run_servers``, which stops every server on one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run_servers(configs: list[uvicorn.Config], sockets: list[socket.socket] | None = None) -> None:
    """Serve several listeners in one process and event loop (on ``sockets``, one for each, if
    given: a worker of ``serve --workers``); SIGTERM or SIGINT stops them all gracefully (each runs
    its lifespan shutdown, which writes the last usage), and a second SIGINT (Ctrl-C twice) forces
    the exit, except in a worker, whose parent decides that. A SIGTERM after a SIGINT does not: a
    terminal's Ctrl-C and then a script's or a service manager's SIGTERM is one request to stop."""
    servers = [_SharedSignals(config) for config in configs]
    listening = [None] * len(servers) if sockets is None else [[sock] for sock in sockets]

    async def serve_all() -> None:
        loop = asyncio.get_running_loop()

        def stop(signum: int | None = None) -> None:
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
