"""The security headers of every console answer (pages, refusals, static files).

The Content-Security-Policy lets a page run no script but the console's own file (no inline
script, no inline event handler), load nothing from another host, post forms only to itself, and
be framed by no one (clickjacking: a framed "Revoke key" button). Pages are never stored by a
browser or a proxy (``no-store``): one of them shows a new key.
"""

from __future__ import annotations

from html import escape
from http import HTTPStatus

from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse

from gateway.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "SecurityHeaders"]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # For browsers older than frame-ancestors.
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Adds the headers to every answer; ``Cache-Control: no-store`` unless the answer set its own
    (the static files, which hold nothing secret)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(name, value) for name, value in message.get("headers", []) if name.lower() != b"server"]
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers + _HEADERS}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except HTTPException as exc:
            # Starlette's own refusals under /console (a method a path does not take, a missing
            # static file), which would otherwise reach the admin API's JSON handlers, headerless.
            phrase = escape(HTTPStatus(exc.status_code).phrase)
            page = f'<!doctype html><title>{phrase}</title><h1>{phrase}</h1><p><a href="/console/">Console</a></p>'
            await HTMLResponse(page, exc.status_code, headers=exc.headers)(scope, receive, send_with_headers)
