"""What every console page shares: the console's parts, the signed-in visit, forms and their
CSRF token, rendering, and the refusals.

A page is an ``async def (visit) -> Response`` wrapped by ``page``: without a live session the
visitor is sent to the sign-in form; a POST must carry the session's CSRF token (compared in
constant time) or is refused with 403; what the service refuses (an unknown user, a bad value)
is a page saying so, with the status the admin API would give.
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import parse_qsl, quote

import jinja2
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gateway.accounting.metrics import Metrics
from gateway.admin.console.outcomes import OutcomeHistory
from gateway.admin.console.sessions import Session, Sessions
from gateway.config import GatewayConfig
from gateway.manage.audit import acting
from gateway.manage.documents import iso
from gateway.manage.rules import InvalidField
from gateway.manage.service import (
    AlreadyExists,
    ChangeNotAnnounced,
    LimitReached,
    ManagementService,
    NotFound,
    UserInactive,
)
from gateway.store import ApiKey
from gateway.store.base import is_store_failure
from gateway.units import format_duration, window_name

__all__ = [
    "COOKIE",
    "PREFIX",
    "Console",
    "KeyRow",
    "SessionVisit",
    "Site",
    "Visit",
    "from_another_site",
    "key_rows",
    "page",
    "posted_form",
    "problem_of",
    "read_form",
    "render",
    "segment",
    "session_page",
    "sessions_unavailable",
    "spoken_duration",
    "user_url",
    "when",
]

logger = logging.getLogger("gateway.error")

PREFIX = "/console"
COOKIE = "gateway_console"
# A console form is a few fields: a body past this is no form of ours.
MAX_FORM_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Console:
    """The console's parts, built once in the admin app's lifespan (``app.open_console``)."""

    config: GatewayConfig
    service: ManagementService
    metrics: Metrics
    sessions: Sessions
    outcomes: OutcomeHistory
    templates: jinja2.Environment

    def render(self, template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
        return render(self, template, http_status, **context)


def segment(value: str) -> str:
    """An id as one path segment: ``/``, ``?`` and ``#`` quoted, and a segment of dots too (``..``
    would take a form's action to another path: a user id ``../keys/K/revoke`` turning "Make
    inactive" into revoking key K)."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted.strip(".") == "" else quoted


def user_url(user_id: str) -> str:
    """A user's page (an id may hold any printable character, ``/`` and ``?`` included)."""
    return f"{PREFIX}/users/{segment(user_id)}"


def when(timestamp: float | None) -> str:
    """A time as the CLI shows it, to the minute: 2026-12-06 14:03 UTC."""
    shown = iso(timestamp)
    return "never" if shown is None else f"{shown[:10]} {shown[11:16]} UTC"


_SPOKEN_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def spoken_duration(seconds: float) -> str:
    """A duration as a person says it: 86400 -> "1 day", 7200 -> "2 hours" (else as configured)."""
    for unit, factor in _SPOKEN_UNITS:
        if seconds >= factor and seconds % factor == 0:
            count = int(seconds // factor)
            return f"{count} {unit}" + ("" if count == 1 else "s")
    return format_duration(seconds)


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A key as its row shows it, in the console and the portal: its status, its age, and whether
    it is old enough to be rotated (``portal.rotate_after``)."""

    key: ApiKey
    status: str
    age: str
    rotate_now: bool


def key_rows(keys: Sequence[ApiKey], now: float, rotate_after: float) -> list[KeyRow]:
    """The rows of ``keys``, newest first."""
    rows = []
    for key in sorted(keys, key=lambda key: (key.created_at, key.id), reverse=True):
        days = int(max(now - key.created_at, 0) // 86400)
        status = key.status(now)
        rows.append(
            KeyRow(
                key=key,
                status=status,
                age="today" if days == 0 else f"{days} day" + ("" if days == 1 else "s"),
                # A key being replaced (in its grace period) has been rotated already.
                rotate_now=status == "active" and key.replaced_by is None and now - key.created_at > rotate_after,
            )
        )
    return rows


def templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.admin.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["when"] = when
    environment.filters["user_url"] = user_url
    environment.filters["segment"] = segment
    environment.filters["spoken"] = spoken_duration
    environment.filters["limits"] = lambda limits: "; ".join(limits) if limits else ""
    environment.filters["limit_items"] = lambda items: "; ".join(f"{i.amount}/{window_name(i)}" for i in items)
    return environment


def render(console: Console, template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
    html = console.templates.get_template(template).render(prefix=PREFIX, **context)
    return HTMLResponse(html, http_status)


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first of each name); anything else is no fields at all."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    body = b""
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return {}
    except ClientDisconnect:  # the browser went away mid-form: no form (and no answer it would read)
        return {}
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, value)
    return fields


class Site(Protocol):
    """What pages behind a session are served from: the console's parts, or the portal's."""

    @property
    def sessions(self) -> Sessions: ...

    @property
    def service(self) -> ManagementService: ...

    def render(self, template: str, http_status: int = 200, **context: Any) -> HTMLResponse: ...


SiteT = TypeVar("SiteT", bound=Site)


@dataclass(slots=True)
class SessionVisit(Generic[SiteT]):
    """A request with a live session, of the console or the portal."""

    request: Request
    site: SiteT
    session: Session
    form: dict[str, str] = field(default_factory=dict)

    @property
    def service(self) -> ManagementService:
        return self.site.service

    def render(self, template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
        # A page left open goes back to the sign-in form once its session has ended (a second
        # after), rather than show what it showed to whoever comes by.
        ends_in = math.ceil(max(self.site.sessions.remaining(self.session), 0)) + 1
        return self.site.render(template, http_status, session=self.session, session_ends_in=ends_in, **context)

    def problem(self, status: int, message: str) -> HTMLResponse:
        return self.render("problem.html", status, status=status, message=message)


@dataclass(slots=True)
class Visit(SessionVisit[Console]):
    """A signed-in operator's request."""

    @property
    def console(self) -> Console:
        return self.site


VisitT = TypeVar("VisitT", bound=SessionVisit[Any])


def session_page(
    endpoint: Callable[[VisitT], Awaitable[Response]],
    *,
    name: str,
    site_of: Callable[[Request], SiteT],
    visit: Callable[[Request, SiteT, Session], VisitT],
    cookie: str,
    no_session: Callable[[Request, SiteT], Response],
    unavailable: Callable[[SiteT], Response],
    actor: Callable[[Session], tuple[str, str]],
) -> Callable[[Request], Awaitable[Response]]:
    """A page for a live session only (``no_session`` answers otherwise); a POST checked by
    ``posted_form``; each POST inside ``acting(*actor(session), <a new request id>)``, which the
    answer carries back; what the service refuses, a page with the admin API's status."""

    async def handle(request: Request) -> Response:
        site = site_of(request)
        session_id = request.cookies.get(cookie)
        try:
            session = await site.sessions.find(session_id) if session_id else None
        except Exception as exc:
            logger.error("%s sessions unavailable: %s", name, type(exc).__name__)
            return unavailable(site)
        if session is None:
            return no_session(request, site)
        current = visit(request, site, session)
        if request.method == "POST":
            current.form, refusal = await posted_form(request, session)
            if refusal is not None:
                return current.problem(403, refusal)
        try:
            if request.method != "POST":
                return await endpoint(current)
            # Every change is a POST: recorded in the audit trail under a request id of its own.
            request_id = secrets.token_hex(8)
            with acting(*actor(session), request_id):
                response = await endpoint(current)
            response.headers["x-request-id"] = request_id
            return response
        except Exception as exc:
            problem = problem_of(exc)
            if problem is None:
                raise
            return current.problem(*problem)

    return handle


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console  # opened in the admin app's lifespan
    return console


def _signing_in(request: Request) -> RedirectResponse:
    """To the sign-in form, back here afterwards (a GET's page; after a POST, the overview)."""
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = f"{PREFIX}/sign-in" + (f"?next={quote(back, safe='')}" if request.method == "GET" else "")
    return RedirectResponse(target, 303)


def sessions_unavailable(console: Console) -> HTMLResponse:
    message = "The console's sessions are kept in Redis (redis.url), which does not answer: retry once it does."
    return render(console, "problem.html", 503, status=503, message=message)


def from_another_site(request: Request) -> bool:
    """A POST a page of another origin made the browser send (Sec-Fetch-Site, which pages cannot
    forge): SameSite=Strict lets one from the same host on another port through."""
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


async def posted_form(request: Request, session: Session) -> tuple[dict[str, str], str | None]:
    """A POST's form, and why it is refused if it is: sent from another site's page, or without
    the session's CSRF token (compared in constant time)."""
    if from_another_site(request):
        return {}, "This form was refused: it was sent from a page of another site."
    form = await read_form(request)
    if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
        return form, (
            "This form was refused: it did not carry this session's security token (CSRF)."
            " Open the page again and send the form from there."
        )
    return form, None


def problem_of(exc: Exception) -> tuple[int, str] | None:
    """The status and message of a page for what the service refused; None for anything else."""
    if isinstance(exc, NotFound):
        return 404, str(exc)
    if isinstance(exc, AlreadyExists):
        return 409, str(exc)
    if isinstance(exc, InvalidField):
        return 422, str(exc)
    if isinstance(exc, LimitReached):
        return exc.status, str(exc)
    if isinstance(exc, UserInactive):
        return 403, str(exc)
    if isinstance(exc, ChangeNotAnnounced):
        return (
            503,
            "The change was made, but Redis could not tell every gateway: they may use cached"
            " copies for up to cache.ttl_seconds. Repeat it once Redis answers.",
        )
    if is_store_failure(exc):
        return 503, "The key store is unavailable; nothing was changed. Retry later."
    return None


def page(endpoint: Callable[[Visit], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A console page for signed-in operators only (others go to the sign-in form); a POST checked
    for the session's CSRF token, its changes recorded as the signed-in token's."""
    return session_page(
        endpoint,
        name="console",
        site_of=console_of,
        visit=Visit,
        cookie=COOKIE,
        no_session=lambda request, _console: _signing_in(request),
        unavailable=sessions_unavailable,
        actor=lambda session: (session.actor, "console"),
    )
