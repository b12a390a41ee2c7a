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

__all__ = ["CONTENT_SECURITY_POLICY", "SecurityHeaders", "content_security_policy"]


def content_security_policy(frame_ancestors: str = "'none'") -> str:
    """The policy, with who may frame the pages (the portal's ``portal.frame_ancestors``)."""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
        f" form-action 'self'; frame-ancestors {frame_ancestors}; base-uri 'none'"
    )


CONTENT_SECURITY_POLICY = content_security_policy()


def _headers(frame_ancestors: str) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-security-policy", content_security_policy(frame_ancestors).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]
    if frame_ancestors == "'none'":
        headers.append((b"x-frame-options", b"DENY"))  # for browsers older than frame-ancestors
    return headers


class SecurityHeaders:
    """Adds the headers to every answer; ``Cache-Control: no-store`` unless the answer set its own
    (the static files, which hold nothing secret)."""

    def __init__(
        self, app: ASGIApp, *, frame_ancestors: str = "'none'", home: str = "/console/", home_name: str = "Console"
    ) -> None:
        """``home``: where Starlette's own refusals link back to, by ``home_name``."""
        self.app = app
        self._headers = _headers(frame_ancestors)
        self._home = escape(home)
        self._home_name = escape(home_name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(name, value) for name, value in message.get("headers", []) if name.lower() != b"server"]
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers + self._headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except HTTPException as exc:
            # Starlette's own refusals under /console (a method a path does not take, a missing
            # static file), which would otherwise reach the admin API's JSON handlers, headerless.
            phrase = escape(HTTPStatus(exc.status_code).phrase)
            back = f'<a href="{self._home}">{self._home_name}</a>'
            page = f"<!doctype html><title>{phrase}</title><h1>{phrase}</h1><p>{back}</p>"
            await HTMLResponse(page, exc.status_code, headers=exc.headers)(scope, receive, send_with_headers)
