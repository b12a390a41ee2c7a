"""The ``gateway`` command line.

``--config PATH`` is accepted before or after any subcommand (``$GATEWAY_CONFIG`` otherwise).
Every failure is one line on stderr that says what to do, with a non-zero exit status: 2 for a
configuration or usage problem.
"""

from __future__ import annotations

import click

from gateway import __version__
from gateway.cli.audit import audit
from gateway.cli.common import ConfigProblem, OneLineErrors, config_option, load
from gateway.cli.manage import db, keys, portal, usage, users
from gateway.cli.transfer import export_command, import_command

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
    config = load(ctx)
    if workers > 1 and config.redis.url is None:
        # Each worker would keep its own in-memory windows: every limit would be multiplied.
        raise ConfigProblem(
            f"--workers {workers}: rate limits are counted in each worker's memory, so {workers} workers would"
            f" allow {workers} times every limit; set redis.url (GATEWAY_REDIS_URL) to share them, or run one"
        )
    if config.portal.port is not None and config.redis.url is not None and not config.admin_tokens():
        # Portal sessions in Redis are signed with a key from the admin tokens: without one, whoever
        # can write to Redis could open a session as any user, and make keys for it.
        raise ConfigProblem(
            "portal.port: the portal keeps its sessions in Redis (redis.url), signed with a key from the admin"
            " tokens; set one (GATEWAY_ADMIN_TOKEN or admin.token_file)"
        )
    from gateway.server.serving import ListenError, serve as serve_listeners

    host = host or config.listen.host
    port = config.listen.port if port is None else port
    try:
        status = serve_listeners(config, host, port, workers)
    except ListenError as exc:
        raise CannotListen(str(exc)) from None
    ctx.exit(status)


class CannotListen(click.ClickException):
    """An address to listen on cannot be had (exit status 3, as uvicorn's failed start)."""

    exit_code = 3


main.add_command(users)
main.add_command(keys)
main.add_command(usage)
main.add_command(db)
main.add_command(import_command)
main.add_command(export_command)
main.add_command(audit)
main.add_command(portal)
