"""Signing in and out.

Signing in takes an admin token once (any configured one, compared in constant time as the admin
API compares it) and sets the session cookie: HttpOnly (no script reads it), SameSite=Strict (no
other site's page sends it), Secure with ``console.secure_cookies``, for the console's paths only.
The token itself is kept nowhere: the session holds its name. The sign-in form carries a token
of its own, the same as a cookie set with the form (so no other site can sign a browser in with a
token of its choosing).
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.admin.console.web import (
    COOKIE,
    PREFIX,
    Visit,
    console_of,
    from_another_site,
    logger,
    page,
    read_form,
    render,
    sessions_unavailable,
)
from gateway.admin.token import named_token

__all__ = ["sign_in", "sign_in_form", "sign_out"]

# The sign-in form's own token, before any session exists.
FORM_COOKIE = "gateway_console_sign_in"


def _next_page(target: str | None) -> str:
    """Where to go after signing in: a console page, never another site (``//host``, ``/\\host``)."""
    if target and target.startswith(PREFIX + "/") and "//" not in target and "\\" not in target:
        return target
    return PREFIX + "/"


def _form(request: Request, status: int = 200, message: str | None = None) -> Response:
    console = console_of(request)
    form_token = secrets.token_urlsafe(32)
    response = render(
        console,
        "sign_in.html",
        status,
        form_token=form_token,
        next_page=_next_page(request.query_params.get("next")),
        message=message,
    )
    _set_cookie(response, FORM_COOKIE, form_token, secure=console.config.console.secure_cookies)
    return response


def _set_cookie(response: Response, name: str, value: str, *, secure: bool) -> None:
    """A cookie no script reads, no other site's page sends, for the console's paths only."""
    response.set_cookie(name, value, path=PREFIX + "/", httponly=True, samesite="strict", secure=secure)


async def sign_in_form(request: Request) -> Response:
    return _form(request)


async def sign_in(request: Request) -> Response:
    console = console_of(request)
    if from_another_site(request):
        return _form(request, 403, "The sign-in form was sent from a page of another site: sign in here.")
    form = await read_form(request)
    expected = request.cookies.get(FORM_COOKIE, "")
    if not expected or not hmac.compare_digest(form.get("form_token", "").encode(), expected.encode()):
        return _form(request, 403, "The sign-in form had expired or was not this console's: sign in again.")
    tokens = [(name, token.encode()) for name, token in console.config.admin_tokens()]
    actor = named_token(form.get("token", "").strip().encode("utf-8", "replace"), tokens)
    if actor is None:
        console.metrics.admin_auth_failures.inc()
        return _form(request, 401, "That is not an admin token of this gateway.")
    # A new id at every sign-in, whatever cookie the browser had.
    old = request.cookies.get(COOKIE)
    try:
        if old:
            await console.sessions.end(old)
        session_id, _ = await console.sessions.start(actor)
    except Exception as exc:
        logger.error("console sessions unavailable: %s", type(exc).__name__)
        return sessions_unavailable(console)
    response = RedirectResponse(_next_page(form.get("next")), 303)
    _set_cookie(response, COOKIE, session_id, secure=console.config.console.secure_cookies)
    response.delete_cookie(FORM_COOKIE, path=PREFIX + "/")
    return response


@page
async def sign_out(visit: Visit) -> Response:
    session_id = visit.request.cookies.get(COOKIE)
    if session_id:
        await visit.console.sessions.end(session_id)
    response = RedirectResponse(f"{PREFIX}/sign-in", 303)
    response.delete_cookie(COOKIE, path=PREFIX + "/")
    return response
