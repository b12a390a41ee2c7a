"""The admin token: every ``/admin/v1/`` path needs it, and so does ``/metrics`` unless
``metrics.public``; the probes (``/healthz``, ``/readyz``) and the OpenAPI document do not.

``needs_token`` decides for the middleware and for the document's ``security`` alike
(``openapi.py``), so the two cannot disagree.
"""

from __future__ import annotations

import hmac

from gateway.accounting.metrics import Metrics
from gateway.admin.errors import envelope
from gateway.types import ASGIApp, Receive, Scope, Send

__all__ = ["API", "OPENAPI_PATH", "AdminToken", "needs_token"]

API = "/admin/v1"
OPENAPI_PATH = f"{API}/openapi.json"


def needs_token(path: str, *, public_metrics: bool) -> bool:
    if path == "/metrics":
        return not public_metrics
    return path.startswith(API + "/") and path != OPENAPI_PATH


class AdminToken:
    """Requires the admin token where ``needs_token`` says (pure ASGI, constant-time compare);
    every refusal is counted in ``gateway_admin_auth_failures_total``."""

    def __init__(self, app: ASGIApp, token: str, metrics: Metrics, *, public_metrics: bool) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()
        self._metrics = metrics
        self._public_metrics = public_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and needs_token(scope["path"], public_metrics=self._public_metrics):
            given = [value for name, value in scope["headers"] if name == b"authorization"]
            # compare_digest on every request, whatever was sent: no early exit to time.
            ok = hmac.compare_digest(given[0] if len(given) == 1 else b"", self._expected) and len(given) == 1
            if not ok:
                self._metrics.admin_auth_failures.inc()
                message = "send the admin token as 'Authorization: Bearer <token>'"
                response = envelope(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
