"""``upstream-stub`` / ``python -m upstream_stub``: serve the stub with uvicorn."""

from __future__ import annotations

import logging

import click
import uvicorn

from upstream_stub.app import QuietResetFilter, create_app

LOG_LEVELS = ["critical", "error", "warning", "info", "debug", "trace"]


@click.command(context_settings={"auto_envvar_prefix": "UPSTREAM_STUB"})
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=9000, show_default=True, type=int, help="Port to bind.")
@click.option(
    "--log-level", default="warning", show_default=True, type=click.Choice(LOG_LEVELS), help="uvicorn log level."
)
def main(host: str, port: int, log_level: str) -> None:
    """Run the upstream stub (mockup API + /__stub/ test tools)."""
    # Server and Date headers stay on: tests check that the proxy passes the upstream's own through.
    config = uvicorn.Config(
        create_app(),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        log_level=log_level,
        # A stub has nothing worth draining: don't let a stalled test request hold up shutdown.
        timeout_graceful_shutdown=1,
    )
    # Config() has just configured logging; the filter goes on afterwards so /__stub/reset stays quiet.
    logging.getLogger("uvicorn.error").addFilter(QuietResetFilter())
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
