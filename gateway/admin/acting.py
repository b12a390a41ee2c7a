"""Names who makes the changes of an admin request, for the audit trail: the admin token's name
(``token.py`` puts it in the scope) and the request's id, which the answer carries back as
``X-Request-Id`` so that an operator can find the request's events."""

from __future__ import annotations

import secrets

from gateway.manage.audit import acting
from gateway.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ActingAs"]

# A request id the client sends is kept when it is this plain; otherwise one is made.
_MAX_REQUEST_ID = 128


def _request_id(scope: Scope, key_prefixes: tuple[str, ...]) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given: str = value.decode("latin-1")
            plain = 0 < len(given) <= _MAX_REQUEST_ID and given.isascii() and given.isprintable() and " " not in given
            # A key pasted for an id would be echoed and kept in the audit trail: never.
            if plain and not any(prefix in given for prefix in key_prefixes):
                return given
            break
    return secrets.token_hex(8)


class ActingAs:
    def __init__(self, app: ASGIApp, key_prefixes: tuple[str, ...]) -> None:
        self.app = app
        self._key_prefixes = key_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        who = scope.get("state", {}).get("admin") if scope["type"] == "http" else None
        if who is None:
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope, self._key_prefixes)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        with acting(who, "api", request_id):
            await self.app(scope, receive, send_with_id)
