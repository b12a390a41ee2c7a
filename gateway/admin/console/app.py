"""The operator console: pages served by the admin listener under ``/console/``, built on the
same ``ManagementService`` as the admin API and the CLI.

``console_routes`` is what the admin app mounts; ``open_console`` builds the console's parts in
the admin app's lifespan (its sessions, and the outcome history that samples the metrics once a
minute). Every answer carries the security headers (``headers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router, request_response
from starlette.staticfiles import StaticFiles

from gateway.accounting.metrics import Metrics
from gateway.admin.console import audit, keys, overview, signing, users
from gateway.admin.console.headers import SecurityHeaders
from gateway.admin.console.outcomes import OutcomeHistory
from gateway.admin.console.sessions import MemorySessionRecords, RedisSessionRecords, Sessions, token_keys
from gateway.admin.console.web import PREFIX, Console, Visit, page, templates
from gateway.config import GatewayConfig
from gateway.manage.service import ManagementService

__all__ = ["console_routes", "open_console"]

STATIC = Path(__file__).parent / "static"


@page
async def missing(visit: Visit) -> Response:
    return visit.problem(404, "There is no such page in the console.")


def console_routes() -> list[BaseRoute]:
    """The console's routes, for the admin app: ``/console`` and everything under it."""
    router = Router(
        [
            Route("/", overview.overview),
            Route("/sign-in", signing.sign_in_form),
            Route("/sign-in", signing.sign_in, methods=["POST"]),
            Route("/sign-out", signing.sign_out, methods=["POST"]),
            Route("/users", users.users),
            Route("/users", users.add_user, methods=["POST"]),
            Route("/users/{user_id:path}", users.user_page),
            # The actions on a user come before its id, which may hold a "/".
            Route("/subscription/{user_id:path}", users.set_subscription, methods=["POST"]),
            Route("/new-key/{user_id:path}", keys.new_key),
            Route("/new-key/{user_id:path}", keys.create_key, methods=["POST"]),
            Route("/keys/{key_id}", keys.key_page),
            Route("/keys/{key_id}/rate-limits", keys.save_limits, methods=["POST"]),
            Route("/keys/{key_id}/rotate", keys.rotate_key, methods=["POST"]),
            Route("/keys/{key_id}/revoke", keys.confirm_revoke),
            Route("/keys/{key_id}/revoke", keys.revoke_key, methods=["POST"]),
            Route("/audit", audit.audit_log),
            Mount("/static", StaticFiles(directory=STATIC)),
        ],
        # A path of no page: signed in, a page saying so; anonymous, the sign-in form. No redirect
        # to add or drop a slash: it would be built from the client's Host.
        default=request_response(missing),
        redirect_slashes=False,
    )
    return [
        Route(PREFIX, SecurityHeaders(RedirectResponse(f"{PREFIX}/", 307))),
        Mount(PREFIX, SecurityHeaders(router)),
    ]


@contextlib.asynccontextmanager
async def open_console(
    config: GatewayConfig, metrics: Metrics, service: ManagementService, clock: Callable[[], float] = time.time
) -> AsyncIterator[Console]:
    """The console's parts, for as long as the admin app runs."""
    redis = RedisSessionRecords(config.redis.url, timeout=config.redis.timeout) if config.redis.url else None
    sessions = Sessions(
        redis or MemorySessionRecords(clock),
        keys=token_keys(config.admin_tokens()),
        idle_timeout=config.console.session_idle_timeout,
        lifetime=config.console.session_lifetime,
        clock=clock,
    )
    outcomes = OutcomeHistory(metrics.outcome_totals, clock)
    sampling = asyncio.create_task(outcomes.sample_forever())
    try:
        yield Console(config, service, metrics, sessions, outcomes, templates())
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        if redis is not None:
            await redis.aclose()
