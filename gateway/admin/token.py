"""The admin token: every ``/admin/v1/`` path needs it, and so does ``/metrics`` unless
``metrics.public``; the probes (``/healthz``, ``/readyz``) and the OpenAPI document do not.

``needs_token`` decides for the middleware and for the document's ``security`` alike
(``openapi.py``), so the two cannot disagree.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from gateway.accounting.metrics import Metrics
from gateway.admin.errors import envelope
from gateway.types import ASGIApp, Receive, Scope, Send

__all__ = ["API", "OPENAPI_PATH", "AdminToken", "named_token", "needs_token"]

API = "/admin/v1"
OPENAPI_PATH = f"{API}/openapi.json"


def needs_token(path: str, *, public_metrics: bool) -> bool:
    if path == "/metrics":
        return not public_metrics
    return path.startswith(API + "/") and path != OPENAPI_PATH


def named_token(given: bytes, expected: Sequence[tuple[str, bytes]]) -> str | None:
    """The name of the token ``given`` is, or None. Every token is compared, whatever was sent and
    whichever matches: nothing to time."""
    who = None
    for name, token in expected:
        if hmac.compare_digest(given, token):
            who = name
    return who


class AdminToken:
    """Requires an admin token where ``needs_token`` says (pure ASGI, constant-time compare);
    every refusal is counted in ``gateway_admin_auth_failures_total``. The name of the token given
    is in ``scope["state"]["admin"]`` for what the request does (the audit's "who")."""

    def __init__(
        self, app: ASGIApp, tokens: Sequence[tuple[str, str]], metrics: Metrics, *, public_metrics: bool
    ) -> None:
        assert tokens, "the admin listener is on only with a token"
        self.app = app
        self._expected = [(name, f"Bearer {token}".encode()) for name, token in tokens]
        self._metrics = metrics
        self._public_metrics = public_metrics

    def _who(self, given: list[bytes]) -> str | None:
        """The name of the one token given, or None."""
        who = named_token(given[0] if len(given) == 1 else b"", self._expected)
        return who if len(given) == 1 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and needs_token(scope["path"], public_metrics=self._public_metrics):
            who = self._who([value for name, value in scope["headers"] if name == b"authorization"])
            if who is not None:
                scope.setdefault("state", {})["admin"] = who
            else:
                self._metrics.admin_auth_failures.inc()
                message = "send the admin token as 'Authorization: Bearer <token>'"
                response = envelope(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
