"""The ``gateway`` command line.

``--config PATH`` is accepted before or after any subcommand (``$GATEWAY_CONFIG`` otherwise).
Every failure is one line on stderr that says what to do, with a non-zero exit status: 2 for a
configuration or usage problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import click
import uvicorn
from uvicorn.config import STARTUP_FAILURE

from gateway import __version__
from gateway.accounting.metrics import Metrics
from gateway.cli_common import ConfigProblem, OneLineErrors, config_option, load
from gateway.cli_manage import db, keys, usage, users
from gateway.cli_transfer import export_command, import_command
from gateway.config import GatewayConfig

__all__ = ["main"]


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.version_option(__version__, prog_name="gateway")
def main() -> None:
    """An API-key authentication gateway in front of an HTTP API."""


@main.command()
@config_option
@click.option("--host", default=None, help="Address to listen on  [default: listen.host, 127.0.0.1]")
@click.option("--port", type=int, default=None, help="Port to listen on  [default: listen.port, 8080]")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int) -> None:
    """Run the gateway (uvicorn with uvloop and httptools), and the admin API if a token is set."""
    from gateway.logs import logging_config

    config = load(ctx)
    if workers > 1 and config.redis.url is None:
        # Each worker would keep its own in-memory windows: every limit would be multiplied.
        raise ConfigProblem(
            f"--workers {workers}: rate limits are counted in each worker's memory, so {workers} workers would"
            f" allow {workers} times every limit; set redis.url (GATEWAY_REDIS_URL) to share them, or run one"
        )
    host = host or config.listen.host
    port = config.listen.port if port is None else port
    log_config = logging_config(config.logging.level)
    logging.config.dictConfig(log_config)
    logging.getLogger("gateway.error").info(
        "forwarding http://%s:%d to %s (config: %s, error profile: %s, upstream client: %s)",
        host,
        port,
        config.upstream.url,
        config.source,
        config.error_profile.name,
        config.upstream.client,
    )
    if config.admin_token is None:
        logging.getLogger("gateway.error").info("the admin API is off: no admin token (GATEWAY_ADMIN_TOKEN)")
    else:
        logging.getLogger("gateway.error").info(
            "admin API on http://%s:%d (token from %s)",
            config.admin.host,
            config.admin.port,
            "GATEWAY_ADMIN_TOKEN" if os.environ.get("GATEWAY_ADMIN_TOKEN") else "admin.token_file",
        )
    if workers == 1:
        _serve_process(config, host, port, log_config, sockets=None, metrics=None)
        return
    from gateway.accounting.metrics import WorkerSlots
    from gateway.workers import run_workers

    # Bound once, here, and listening at once (connections wait in the backlog until a worker
    # accepts them, rather than being refused while the workers start); every worker accepts on them.
    addresses = [(host, port)]
    if config.admin_token is not None:
        addresses.append((config.admin.host, config.admin.port))
    sockets = []
    for address in addresses:
        listener = uvicorn.Config("gateway:app", host=address[0], port=address[1]).bind_socket()
        listener.listen(2048)  # uvicorn's default backlog
        sockets.append(listener)
    slots = WorkerSlots(workers)  # shared with every worker: /metrics adds them up

    def serve_worker(index: int) -> None:
        metrics = Metrics(slots, index)
        _serve_process(config, host, port, log_config, sockets=sockets, metrics=metrics)

    ctx.exit(run_workers(workers, serve_worker))


def _serve_process(
    config: GatewayConfig,
    host: str,
    port: int,
    log_config: dict[str, Any],
    *,
    sockets: list[socket.socket] | None,
    metrics: Metrics | None,
) -> None:
    """Serve the public listener, and the admin listener if there is a token, in this process:
    on ``sockets`` (public, then admin) if given, else on sockets of its own."""
    from gateway.http.app import create_app
    from gateway.http.protocol import protocol_class

    server_options: dict[str, Any] = {
        "loop": "uvloop",
        "http": "httptools",
        "ws": "none",
        "lifespan": "on",
        # The gateway decides what X-Forwarded-* means (proxy.trusted_peers); uvicorn's own
        # handling would trust loopback peers by default.
        "proxy_headers": False,
        # The upstream's own Server and Date headers are passed through; uvicorn's would double them.
        "server_header": False,
        "date_header": False,
        "access_log": False,
        "timeout_graceful_shutdown": config.listen.shutdown_timeout,
    }
    metrics = metrics or Metrics()
    app = create_app(config, metrics=metrics)
    public = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=log_config,
        # Typed int by uvicorn, used as call_later's float delay.
        timeout_keep_alive=config.limits.keepalive_timeout,  # type: ignore[arg-type]
        **(server_options | {"http": protocol_class(config.limits, config.error_profile, app.proxy)}),
    )
    if config.admin_token is None:
        run_servers([public], sockets)
        return
    from gateway.admin.api import create_admin_app

    admin = uvicorn.Config(
        create_admin_app(config, metrics),
        host=config.admin.host,
        port=config.admin.port,
        log_config=None,
        **server_options,
    )
    run_servers([public, admin], sockets)


class _SharedSignals(uvicorn.Server):
    """A uvicorn server that leaves signals to ``run_servers``, which stops every server on one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run_servers(configs: list[uvicorn.Config], sockets: list[socket.socket] | None = None) -> None:
    """Serve several listeners in one process and event loop (on ``sockets``, one for each, if
    given: a worker of ``serve --workers``); SIGTERM or SIGINT stops them all gracefully (each runs
    its lifespan shutdown), and a second one forces the exit, except in a worker, whose parent
    decides that (a service manager may signal a worker and its parent both)."""
    servers = [_SharedSignals(config) for config in configs]
    listening = [None] * len(servers) if sockets is None else [[sock] for sock in sockets]

    async def serve_all() -> None:
        loop = asyncio.get_running_loop()

        def stop() -> None:
            for server in servers:
                if server.should_exit and sockets is None:
                    server.force_exit = True
                server.should_exit = True

        async def serve_one(server: _SharedSignals, given: list[socket.socket] | None) -> None:
            await server.serve(given)
            if not server.started:  # its start-up failed: the others stop too
                stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        await asyncio.gather(*(serve_one(server, given) for server, given in zip(servers, listening, strict=True)))

    with asyncio.Runner(loop_factory=configs[0].get_loop_factory()) as runner:
        runner.run(serve_all())
    if not all(server.started for server in servers):
        sys.exit(STARTUP_FAILURE)


main.add_command(users)
main.add_command(keys)
main.add_command(usage)
main.add_command(db)
main.add_command(import_command)
main.add_command(export_command)
