"""The answers the gateway gives by itself: a ``GatewayError`` rendered in the active error profile
(JSON, never a traceback or an HTML page), and the outcome the metrics and the access log give it."""

from __future__ import annotations

from email.utils import formatdate

from gateway.errors import GatewayError
from gateway.profiles import ErrorProfile
from gateway.types import Send

__all__ = ["CLIENT_GONE", "REFUSAL", "error_answer", "outcome_of", "send_error"]

# The metrics outcome of each answer the gateway gives by itself.
OUTCOME_OF = {
    "missing_credentials": "missing_key",
    "invalid_credentials": "invalid_key",
    "subscription_inactive": "subscription_inactive",
    "rate_limited": "rate_limited",
    "concurrency_limited": "concurrency_limited",
    "insufficient_credits": "insufficient_credits",
    "payload_too_large": "too_large",
    "upstream_unavailable": "upstream_unavailable",
    "upstream_timeout": "upstream_timeout",
    "bad_request": "bad_request",
    "method_not_allowed": "method_not_allowed",
    "request_timeout": "request_timeout",
    "headers_too_large": "headers_too_large",
    "store_unavailable": "store_unavailable",
    "overloaded": "overloaded",
    "internal_error": "internal_error",
}
# Where the HTTP protocol notes in scope["state"] the (status, outcome, request id, body length) it
# answered a request with whose body turned out malformed after the request had reached the app.
REFUSAL = "gateway.refusal"
# Set in scope["state"] by the HTTP protocol when it cancels a request whose client has gone.
CLIENT_GONE = "gateway.client_gone"


def error_answer(
    profile: ErrorProfile, error: GatewayError, extra: list[tuple[bytes, bytes]] | None = None, *, close: bool = False
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The status, headers and JSON body that answer ``error`` in ``profile``."""
    status, body = profile.render(error)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"date", formatdate(usegmt=True).encode()),
        # An answer about this request and its credentials: no cache may keep it for another.
        (b"cache-control", b"no-store"),
    ]
    headers.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items())
    if extra:
        headers.extend(extra)
    if close:
        headers.append((b"connection", b"close"))
    return status, headers, body


def outcome_of(error: GatewayError) -> str:
    """The metrics and access-log outcome of an answer the gateway gives by itself."""
    return error.outcome or OUTCOME_OF[error.situation]


async def send_error(
    send: Send,
    profile: ErrorProfile,
    error: GatewayError,
    *,
    close: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, int]:
    """Answer ``error`` as the profile says; its status and the length of its body."""
    status, headers, body = error_answer(profile, error, extra, close=close)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status, len(body)
