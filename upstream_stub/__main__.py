"""``upstream-stub`` / ``python -m upstream_stub``: serve the stub with uvicorn."""

from __future__ import annotations

import logging
import math
import re

import click
import uvicorn

from upstream_stub.app import QuietResetFilter, create_app
from upstream_stub.dialects import PROFILES, ProfileName

LOG_LEVELS = ["critical", "error", "warning", "info", "debug", "trace"]
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


class Duration(click.ParamType[float]):
    """Seconds, or a number with a unit as the gateway's config writes them: ``500ms``, ``2s``, ``1m``."""

    name = "duration"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            match = _DURATION.fullmatch(str(value).strip())
            if match is None:
                self.fail(f"expected a duration such as 2s, 500ms or 1m, got {value!r}", param, ctx)
            seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
        if not math.isfinite(seconds):
            self.fail(f"expected a finite duration, got {value!r}", param, ctx)
        return seconds


@click.command(context_settings={"auto_envvar_prefix": "UPSTREAM_STUB"})
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=9000, show_default=True, type=int, help="Port to bind.")
@click.option(
    "--profile",
    default="mockly",
    show_default=True,
    type=click.Choice(PROFILES),
    help="The API imitated: the shape and codes of its error answers.",
)
@click.option(
    "--render-delay",
    default="0s",
    show_default=True,
    type=Duration(),
    help="How long generating a mockup takes (2s, 500ms).",
)
@click.option(
    "--test-tools/--no-test-tools",
    default=False,
    show_default=True,
    help="Serve the /__stub/ test tools and echo every path outside /api/ (the tests and benchmarks use them).",
)
@click.option(
    "--log-level", default="warning", show_default=True, type=click.Choice(LOG_LEVELS), help="uvicorn log level."
)
def main(host: str, port: int, profile: ProfileName, render_delay: float, test_tools: bool, log_level: str) -> None:
    """Run the upstream stub: a stand-in for the mockup API (and, with --test-tools, /__stub/)."""
    # Server and Date headers stay on: tests check that the proxy passes the upstream's own through.
    config = uvicorn.Config(
        create_app(profile=profile, render_delay=render_delay, test_tools=test_tools),
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
