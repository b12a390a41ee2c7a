"""One serving process: the public listener (the gateway's own protocol around the app) and,
with an admin token, the admin listener, on uvicorn in one event loop."""

from __future__ import annotations

import errno
import logging
import logging.config
import socket
from typing import Any

import uvicorn

from gateway.accounting.metrics import Metrics, WorkerSlots
from gateway.config import GatewayConfig
from gateway.logs import logging_config
from gateway.server.signals import run_servers
from gateway.server.workers import run_workers

__all__ = ["serve", "serve_process"]

logger = logging.getLogger("gateway")
logger_uvicorn = logging.getLogger("uvicorn.error")


def serve(config: GatewayConfig, host: str, port: int, workers: int) -> int:
    """Serve until told to stop, in this process or in ``workers`` forked ones; the exit status."""
    log_config = logging_config(config.logging.level, config.logging.format)
    logging.config.dictConfig(log_config)
    logger.info(
        "forwarding http://%s:%d to %s (config: %s, error profile: %s, upstream client: %s)",
        host,
        port,
        config.upstream.url,
        config.source,
        config.error_profile.name,
        config.upstream.client,
    )
    if not config.admin_tokens():
        logger.info("the admin API is off: no admin token (GATEWAY_ADMIN_TOKEN)")
    else:
        logger.info(
            "admin API on http://%s:%d (tokens: %s)",
            config.admin.host,
            config.admin.port,
            ", ".join(name for name, _ in config.admin_tokens()),
        )
    if config.portal.port is not None:
        logger.info("self-service portal on http://%s:%d/portal/", _shown(config.portal.host), config.portal.port)
    # A port that cannot be had stops the start with one line, before anything starts.
    addresses = [(host, port, "--port, listen.port")]
    if config.admin_tokens():
        addresses.append((config.admin.host, config.admin.port, "admin.port"))
    if config.portal.port is not None:
        addresses.append((config.portal.host, config.portal.port, "portal.port"))
    if workers == 1:
        for address in addresses:
            # Tried, then let go: uvicorn binds it itself once the app has started (and says so).
            _listen(*address).close()
        serve_process(config, host, port, log_config, sockets=None, metrics=None, role="process")
        return 0
    # Bound once, here, and listening at once (connections wait in the backlog until a worker
    # accepts them, rather than being refused while the workers start); every worker accepts on them.
    sockets = [_listen(*address) for address in addresses]
    for listener in sockets:
        # What uvicorn says when it binds itself (Config.bind_socket): the port takes connections.
        shown_host, shown_port = listener.getsockname()[:2]
        logger_uvicorn.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", _shown(shown_host), shown_port)

    slots = WorkerSlots(workers)  # shared with every worker: /metrics adds them up

    def serve_worker(index: int) -> None:
        metrics = Metrics(slots, index)
        serve_process(config, host, port, log_config, sockets=sockets, metrics=metrics, role=f"worker {index + 1}")

    return run_workers(workers, serve_worker)


class ListenError(Exception):
    """A listening socket cannot be had (exit status 3, as a server that fails to start)."""


def _listen(host: str, port: int, setting: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # SO_REUSEADDR (set by create_server): a restart need not wait for old connections' TIME_WAIT.
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        what = "is in use by another program" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
        raise ListenError(
            f"{host}:{port} {what}: stop what holds it, or choose another address or port ({setting})"
        ) from None


def serve_process(
    config: GatewayConfig,
    host: str,
    port: int,
    log_config: dict[str, Any],
    *,
    sockets: list[socket.socket] | None,
    metrics: Metrics | None,
    role: str,
) -> None:
    """Serve the public listener, the admin listener if there is a token, and the portal's if
    portal.port is set, in this process: on ``sockets`` (public, admin, portal: those served) if
    given, else on sockets of its own. ``role`` ("process",
    "worker 2") names it in its one started line."""
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
        **(server_options | {"http": protocol_class(config.limits, config.error_profile, app.rules, app.ledger)}),
    )
    servers = [public]
    listeners = f"public http://{_shown(host)}:{port}"
    if config.admin_tokens():
        from gateway.admin.api import create_admin_app

        servers.append(
            uvicorn.Config(
                create_admin_app(config, metrics),
                host=config.admin.host,
                port=config.admin.port,
                log_config=None,
                **server_options,
            )
        )
        listeners += f", admin http://{_shown(config.admin.host)}:{config.admin.port}"
    if config.portal.port is not None:
        from gateway.portal.app import create_portal_app

        servers.append(
            uvicorn.Config(
                create_portal_app(config),
                host=config.portal.host,
                port=config.portal.port,
                log_config=None,
                **server_options,
            )
        )
        listeners += f", portal http://{_shown(config.portal.host)}:{config.portal.port}"
    run_servers(servers, sockets, role=role, listeners=listeners)


def _shown(host: str) -> str:
    """A host as it goes in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host
