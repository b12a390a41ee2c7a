"""The portal's listener: a small Starlette app, on ``portal.host``/``portal.port`` beside the
admin listener (``gateway serve``), built on the console's machinery: its sessions (here keyed by
the user's id, opened by a one-time link rather than a token), its CSRF and Sec-Fetch-Site checks
(``posted_form``), its security headers (with ``portal.frame_ancestors``) and its refusals
(``problem_of``).

The session cookie is SameSite=Lax, not Strict as the console's: the link is opened from the
service's dashboard, another site, and Strict would keep the cookie off the redirect that follows
the exchange (a navigation another site started), so the user would land signed out. Lax sends it
on top-level GET navigations only; a POST still needs the session's CSRF token, and is refused when
another site's page sent it (Sec-Fetch-Site).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, Router, request_response
from starlette.staticfiles import StaticFiles

from gateway.admin.console.app import STATIC
from gateway.admin.console.charts import daily_chart
from gateway.admin.console.headers import SecurityHeaders
from gateway.admin.console.sessions import MemorySessionRecords, RedisSessionRecords, Sessions, user_keys
from gateway.admin.console.web import (
    SessionVisit,
    from_another_site,
    key_rows,
    problem_of,
    segment,
    session_page,
    spoken_duration,
    when,
)
from gateway.config import LOGO_TYPES, MAX_LOGO_BYTES, GatewayConfig
from gateway.manage.portal import PORTAL_PREFIX
from gateway.manage.rules import InvalidField, ServiceError
from gateway.manage.service import CreatedKey, LimitReached, ManagementService, NotFound, open_service
from gateway.store import ApiKey, User
from gateway.types import ASGIApp, Receive, Scope, Send

__all__ = ["COOKIE", "Brand", "Portal", "create_portal_app", "open_portal"]

logger = logging.getLogger("gateway.error")

COOKIE = "gateway_portal"
PREFIX = PORTAL_PREFIX
REDIS_PREFIX = "gateway:portal:session:"
NOWHERE = f'<!doctype html><title>Not Found</title><h1>Not Found</h1><p><a href="{PREFIX}/">The portal</a></p>'
START_AGAIN = "Open the portal again from the service's dashboard, where you found its link."


@dataclass(frozen=True, slots=True)
class Brand:
    """What the portal calls itself and the service, and how it looks (portal.title, .service_name,
    .accent_color, .logo; the error profile's service and wording by default)."""

    service: str
    title: str
    keys: str  # "API keys" (Mockly's documentation), "API Keys" (Mockupanda's)
    accent: str | None
    logo: tuple[bytes, str] | None  # the file's bytes and its media type

    @classmethod
    def of(cls, config: GatewayConfig) -> Brand:
        settings, profile = config.portal, config.error_profile
        service = settings.service_name or profile.service
        logo = None
        if settings.logo is not None:
            path = Path(settings.logo)
            try:
                content = path.read_bytes()  # checked when the config was read; and now?
            except OSError as exc:
                logger.error("portal.logo: cannot read %s (%s): the portal shows no logo", path, exc.strerror or exc)
            else:
                if len(content) <= MAX_LOGO_BYTES:
                    logo = (content, LOGO_TYPES[path.suffix.lower()])
                else:
                    logger.error(
                        "portal.logo: %s is larger than %d bytes: the portal shows no logo", path, MAX_LOGO_BYTES
                    )
        return cls(
            service=service,
            title=settings.title or f"{service} {profile.keys_title}",
            keys=profile.keys_title,
            accent=settings.accent_color,
            logo=logo,
        )


@dataclass(frozen=True, slots=True)
class Portal:
    """The portal's parts, built once in its app's lifespan."""

    config: GatewayConfig
    service: ManagementService
    sessions: Sessions
    templates: jinja2.Environment
    brand: Brand

    def render(self, template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(prefix=PREFIX, brand=self.brand, **context)
        return HTMLResponse(html, http_status)

    def problem(self, status: int, message: str, **context: Any) -> HTMLResponse:
        return self.render("problem.html", status, status=status, message=message, **context)


def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        # The portal's pages, on the console's base page ("console/base.html").
        loader=jinja2.ChoiceLoader(
            [
                jinja2.PackageLoader("gateway.portal", "templates"),
                jinja2.PrefixLoader({"console": jinja2.PackageLoader("gateway.admin.console", "templates")}),
            ]
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["when"] = when
    environment.filters["segment"] = segment
    environment.filters["spoken"] = spoken_duration
    return environment


@dataclass(slots=True)
class Visit(SessionVisit[Portal]):
    """A request of a user with a live portal session (``session.actor`` is the user's id)."""

    @property
    def portal(self) -> Portal:
        return self.site

    @property
    def user_id(self) -> str:
        return self.session.actor


def _portal(request: Request) -> Portal:
    portal: Portal = request.app.state.portal  # opened in the lifespan
    return portal


def _sessions_unavailable(portal: Portal) -> HTMLResponse:
    return portal.problem(503, "The portal cannot reach where its sessions are kept: retry in a moment.")


CLOSED = "The portal is closed to this account: its subscription is not active."


async def _user(service: ManagementService, user_id: str) -> User | None:
    """``user_id`` if the portal serves it, else None: a user with an active subscription (a user
    deleted, whose keys were all revoked, is inactive: no key made here could work, or should)."""
    try:
        user = await service.get_user(user_id)
    except NotFound:
        return None
    return user if user.subscription == "active" else None


def page(endpoint: Callable[[Visit], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A portal page for a live session of a user it is open to; a POST checked as the console
    checks one, and its changes recorded in the audit trail as ``portal:<user id>``."""

    async def open_only(visit: Visit) -> Response:
        user = await _user(visit.service, visit.user_id)
        if user is None or user.updated_at > visit.session.started_at:
            # Inactive; or its subscription changed since the session opened (deleted, then made
            # active again, between two of its requests): a session outlives neither.
            await visit.portal.sessions.end(visit.request.cookies[COOKIE])
            if user is None:
                return visit.problem(403, CLOSED)
            return visit.portal.problem(401, f"Your portal session has ended: the account changed. {START_AGAIN}")
        return await endpoint(visit)

    return session_page(
        open_only,
        name="portal",
        site_of=_portal,
        visit=Visit,
        cookie=COOKIE,
        no_session=lambda _request, portal: portal.problem(401, f"Your portal session has ended. {START_AGAIN}"),
        unavailable=_sessions_unavailable,
        actor=lambda session: (f"portal:{session.actor}", "portal"),
    )


# ------------------------------------------------------------------------------------- pages


async def start(request: Request) -> Response:
    """The link: its token (once, before it expires) for a new session of its user."""
    portal = _portal(request)
    token = request.query_params.get("token", "")
    try:
        found = await portal.service.take_portal_link(token) if token else None
        if found is not None and await _user(portal.service, found[0]) is None:
            return portal.problem(403, f"{CLOSED} {START_AGAIN}")
    except Exception as exc:
        problem = problem_of(exc)  # the store unavailable: not the link's fault
        if problem is None:
            raise
        return portal.problem(*problem)
    if found is None:
        return portal.problem(
            403, f"This portal link has been used already, has expired, or is not a link of this portal. {START_AGAIN}"
        )
    old = request.cookies.get(COOKIE)
    try:
        before = await portal.sessions.find(old) if old else None
        if old:
            await portal.sessions.end(old)
        # A new id at every exchange, whatever cookie the browser had. The account the browser
        # showed, if another, is named on every page of the new session (a link pushed into
        # someone's browser would otherwise swap accounts unseen; one notice could be navigated
        # away), until it signs out: a second link of the same other account does not clear it.
        replaced = "" if before is None else before.actor if before.actor != found[0] else before.replaced
        session_id, _ = await portal.sessions.start(found[0], back=found[1] or "", replaced=replaced)
    except Exception as exc:
        logger.error("portal sessions unavailable: %s", type(exc).__name__)
        return _sessions_unavailable(portal)
    response = RedirectResponse(f"{PREFIX}/", 303)
    response.set_cookie(
        COOKIE,
        session_id,
        path=PREFIX + "/",
        httponly=True,
        samesite="lax",
        secure=portal.config.portal.cookies_secure(),
    )
    return response


async def sign_out(request: Request) -> Response:
    """Ends the session here and now (on a shared computer, say). No CSRF token: the worst another
    site could do is sign the user out, and it cannot (a SameSite=Lax cookie is not sent with its
    POST, and Sec-Fetch-Site gives it away); every page keeps one token field, its form's."""
    portal = _portal(request)
    if from_another_site(request):
        return portal.problem(403, "This form was refused: it was sent from a page of another site.")
    session_id = request.cookies.get(COOKIE)
    try:
        if session_id:
            await portal.sessions.end(session_id)
    except Exception as exc:
        logger.error("portal sessions unavailable: %s", type(exc).__name__)
        return _sessions_unavailable(portal)
    response = portal.problem(200, f"You have left the portal. {START_AGAIN}")
    response.delete_cookie(COOKIE, path=PREFIX + "/")
    return response


async def _keys_page(
    visit: Visit, created: CreatedKey | None = None, replaced: ApiKey | None = None, notice: str | None = None
) -> Response:
    service, settings = visit.portal.service, visit.portal.config.portal
    now = service.now()
    first, last, days = await service.daily_usage(user_id=visit.user_id)
    return visit.render(
        "keys.html",
        keys=key_rows(await service.list_keys(visit.user_id), now, settings.rotate_after),
        rotate_after=settings.rotate_after,
        graces=settings.rotation_graces,
        created=created,
        replaced=replaced,
        now=now,
        notice=notice,
        days=days,
        chart=daily_chart(days, first, last, title=f"Requests per day of your keys, {first} to {last}"),
        first=first,
        last=last,
    )


@page
async def keys(visit: Visit) -> Response:
    done = visit.request.query_params.get("done", "")
    return await _keys_page(visit, notice="The key was revoked." if done == "revoked" else None)


@page
async def new_key(visit: Visit) -> Response:
    return visit.render("new_key.html")


@contextlib.asynccontextmanager
async def _one_key_more(visit: Visit) -> AsyncIterator[None]:
    """Counts a key made by this session (LimitReached past portal.max_keys_per_session), and takes
    the count back when the service refuses to make it: what counts is keys made, not attempts."""
    most = visit.portal.config.portal.max_keys_per_session
    sessions, session_id = visit.portal.sessions, visit.request.cookies[COOKIE]
    # Counted before the key is made, atomically: requests sent at once cannot pass it together.
    if await sessions.count(session_id, visit.session) > most:
        await sessions.count(session_id, visit.session, -1)
        raise LimitReached(f"This session has made {most} keys, the most one session may. {START_AGAIN}", 429)
    try:
        yield
    except ServiceError:
        await sessions.count(session_id, visit.session, -1)
        raise


@page
async def create_key(visit: Visit) -> Response:
    async with _one_key_more(visit):
        created = await visit.portal.service.create_key(
            visit.user_id,
            name=visit.form.get("name", "").strip() or None,
            expires_in=None,
            rate_limits=None,
            max_active=visit.portal.config.portal.max_active_keys_per_user,
            active_only=True,
            unchanged_since=visit.session.started_at,
        )
    return await _keys_page(visit, created)


@page
async def rotate_key(visit: Visit) -> Response:
    key = await visit.portal.service.get_own_key(visit.user_id, visit.request.path_params["key_id"])
    settings = visit.portal.config.portal
    # The choices offered: "0" (now) or one of the grace periods, in whole seconds.
    offered = {str(int(grace)): grace for grace in settings.rotation_graces} | {"0": 0.0}
    grace = offered.get(visit.form.get("grace", "0"))
    if grace is None:
        raise InvalidField("the old key stops now or after one of the grace periods offered", "grace")
    async with _one_key_more(visit):
        created, old = await visit.portal.service.rotate_key(
            key.id,
            grace=grace or None,
            max_active=settings.max_active_keys_per_user,
            active_only=True,
            unchanged_since=visit.session.started_at,
        )
    return await _keys_page(visit, created, replaced=old)


@page
async def confirm_revoke(visit: Visit) -> Response:
    key = await visit.portal.service.get_own_key(visit.user_id, visit.request.path_params["key_id"])
    return visit.render("revoke.html", key=key)


@page
async def revoke_key(visit: Visit) -> Response:
    key = await visit.portal.service.get_own_key(visit.user_id, visit.request.path_params["key_id"])
    await visit.portal.service.revoke_key(key.id)
    return RedirectResponse(f"{PREFIX}/?done=revoked", 303)


async def theme(request: Request) -> Response:
    """The accent colour (portal.accent_color): a stylesheet, since the CSP allows no inline style."""
    accent = _portal(request).brand.accent or "#2f5fd0"
    return Response(f":root {{ --accent: {accent}; }}\n", media_type="text/css", headers=_PUBLIC)


async def logo(request: Request) -> Response:
    """The logo file (portal.logo), read when the portal started."""
    found = _portal(request).brand.logo
    if found is None:
        return HTMLResponse(NOWHERE, 404)
    return Response(found[0], media_type=found[1], headers=_PUBLIC)


# What any visitor may see and a browser may keep a while: the portal's look, no one's data.
_PUBLIC = {"cache-control": "public, max-age=3600"}


@page
async def missing(visit: Visit) -> Response:
    return visit.problem(404, "There is no such page in the portal.")


# ------------------------------------------------------------------------------------- the app


@contextlib.asynccontextmanager
async def open_portal(
    config: GatewayConfig, service: ManagementService, clock: Callable[[], float] = time.time
) -> AsyncIterator[Portal]:
    """The portal's parts: its sessions in memory, or in Redis (every worker must know them)."""
    settings = config.portal
    redis = (
        RedisSessionRecords(config.redis.url, timeout=config.redis.timeout, prefix=REDIS_PREFIX)
        if config.redis.url
        else None
    )
    sessions = Sessions(
        redis or MemorySessionRecords(clock),
        keys=user_keys(config.admin_tokens()),
        idle_timeout=settings.session_idle_timeout,
        lifetime=settings.session_lifetime,
        clock=clock,
    )
    try:
        yield Portal(config, service, sessions, _templates(), Brand.of(config))
    finally:
        if redis is not None:
            await redis.aclose()


def create_portal_app(
    config: GatewayConfig, *, service: ManagementService | None = None, clock: Callable[[], float] = time.time
) -> Starlette:
    """The portal listener's app; ``service`` (tests) instead of one on the configured store."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            own = service if service is not None else await stack.enter_async_context(open_service(config))
            app.state.portal = await stack.enter_async_context(open_portal(config, own, clock))
            yield

    router = Router(
        [
            Route("/start", start),
            Route("/", keys),
            Route("/new-key", new_key),
            Route("/new-key", create_key, methods=["POST"]),
            Route("/keys/{key_id}/rotate", rotate_key, methods=["POST"]),
            Route("/keys/{key_id}/revoke", confirm_revoke),
            Route("/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
            Route("/sign-out", sign_out, methods=["POST"]),
            Route("/theme.css", theme),
            Route("/logo", logo),
            Mount("/static", StaticFiles(directory=STATIC)),
        ],
        default=request_response(missing),
        redirect_slashes=False,
    )
    headers = {"frame_ancestors": config.portal.frame_ancestors, "home": PREFIX + "/", "home_name": "The portal"}
    nowhere = SecurityHeaders(HTMLResponse(NOWHERE, 404), **headers)
    app = Starlette(
        routes=[
            Route(PREFIX, SecurityHeaders(RedirectResponse(f"{PREFIX}/", 307), **headers)),
            Mount(PREFIX, SecurityHeaders(LiteralPrefix(router, nowhere), **headers)),
        ],
        lifespan=lifespan,
    )
    # Every other path, whatever it holds (a path with a line break matches no route pattern): the
    # portal is all there is on this listener.
    app.router.default = nowhere
    return app


class LiteralPrefix:
    """Serves a request under /portal/ only if the browser sent that prefix as such: the session
    cookie (Path=/portal/) goes with a path that starts with those very bytes, so /portal%2Fstart
    or /%70ortal/start, decoded to /portal/start, would come without it (and a link opened there
    could replace a session without the warning that says so)."""

    def __init__(self, app: ASGIApp, elsewhere: ASGIApp) -> None:
        self.app = app
        self.elsewhere = elsewhere

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if raw is not None and not raw.startswith(PREFIX.encode() + b"/"):
            await self.elsewhere(scope, receive, send)
            return
        await self.app(scope, receive, send)
