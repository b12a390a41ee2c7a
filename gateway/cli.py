"""The ``gateway`` command line.

``--config PATH`` is accepted before or after any subcommand (``$GATEWAY_CONFIG`` otherwise).
Every failure is one line on stderr that says what to do, with a non-zero exit status: 2 for a
configuration or usage problem.
"""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Callable
from typing import Any, TypeVar

import click

from gateway import __version__
from gateway.config import ConfigError, GatewayConfig, load_config

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])
_CONFIG_KEY = "gateway.config_path"


class ConfigProblem(click.ClickException):
    """The configuration cannot be used (exit status 2, like a usage error)."""

    exit_code = 2


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_root().meta[_CONFIG_KEY] = value


def config_option(f: F) -> F:
    return click.option(
        "--config",
        type=click.Path(dir_okay=False),
        expose_value=False,
        is_eager=True,
        callback=_remember_config,
        help="YAML config file (default: $GATEWAY_CONFIG, else ./config.yaml if present, else built-in defaults).",
    )(f)


def load(ctx: click.Context) -> GatewayConfig:
    try:
        return load_config(ctx.find_root().meta.get(_CONFIG_KEY))
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.version_option(__version__, prog_name="gateway")
def main() -> None:
    """An API-key authentication gateway in front of an HTTP API."""


@main.command()
@config_option
@click.option("--host", default=None, help="Address to listen on  [default: listen.host, 127.0.0.1]")
@click.option("--port", type=int, default=None, help="Port to listen on  [default: listen.port, 8080]")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the gateway (uvicorn with uvloop and httptools)."""
    import uvicorn

    from gateway.app import create_app
    from gateway.logs import logging_config

    config = load(ctx)
    host = host or config.listen.host
    port = config.listen.port if port is None else port
    log_config = logging_config(config.log.level)
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
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="on",
        # The gateway decides what X-Forwarded-* means (proxy.trusted_peers); uvicorn's own
        # handling would trust loopback peers by default.
        proxy_headers=False,
        # The upstream's own Server and Date headers are passed through; uvicorn's would double them.
        server_header=False,
        date_header=False,
        access_log=False,
        log_config=log_config,
    )
