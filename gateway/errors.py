"""The answers the gateway gives by itself, as exceptions.

Each error names a *situation*; the active error profile (``profiles.py``) turns the situation
into the status, code, message and envelope of the API the gateway fronts. Errors raised before
the response has started become such a JSON answer; after it has started, the only honest thing
left is to break the connection (``UpstreamAborted``).

    GatewayError                  situation
    ├── AuthenticationError                              (401, with WWW-Authenticate: Bearer)
    │   ├── MissingCredentials    missing_credentials
    │   └── InvalidCredentials    invalid_credentials
    ├── SubscriptionInactive      subscription_inactive  (403)
    ├── RateLimited               rate_limited           (429, with Retry-After)
    ├── PayloadTooLarge           payload_too_large      (413)
    ├── InternalError             internal_error         (500: a bug of ours, logged)
    └── UpstreamError
        ├── UpstreamUnavailable   upstream_unavailable   (502)
        └── UpstreamTimeout       upstream_timeout       (504)

    UpstreamAborted               not an answer: the upstream failed mid-response, so the
                                  client connection is closed without completing the body.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "AuthenticationError",
    "GatewayError",
    "InternalError",
    "InvalidCredentials",
    "MissingCredentials",
    "PayloadTooLarge",
    "RateLimited",
    "SubscriptionInactive",
    "UpstreamAborted",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class GatewayError(Exception):
    """A request the gateway answers itself, in the active error profile."""

    situation: str = ""

    def __init__(
        self,
        reason: str = "",
        *,
        params: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(reason or self.situation)
        self.reason = reason or self.situation
        # Values the profile's message and details may use, e.g. {"max_bytes": 10485760}.
        self.params: Mapping[str, object] = params or {}
        self.headers: Mapping[str, str] = headers or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r})"


class AuthenticationError(GatewayError):
    """The request carries no usable key. The reason is for the log; it never holds the key."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason, headers={"WWW-Authenticate": "Bearer"})


class MissingCredentials(AuthenticationError):
    """No Authorization header at all."""

    situation = "missing_credentials"


class InvalidCredentials(AuthenticationError):
    """Another scheme, a malformed, unknown, revoked or expired key, or more than one."""

    situation = "invalid_credentials"


class SubscriptionInactive(GatewayError):
    """A valid key whose user's subscription is not active."""

    situation = "subscription_inactive"


class RateLimited(GatewayError):
    """A window of the key's rate limits is full; ``window`` is its length, e.g. "60s"."""

    situation = "rate_limited"

    def __init__(self, *, limit: int, window: str, retry_after: int) -> None:
        super().__init__(
            f"rate limit of {limit} per {window} reached",
            params={"limit": limit, "window": window, "retry_after": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


class PayloadTooLarge(GatewayError):
    """The request body is larger than ``limits.max_body_bytes``."""

    situation = "payload_too_large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"request body over {max_bytes} bytes", params={"max_bytes": max_bytes})


class InternalError(GatewayError):
    """Something the gateway did not expect went wrong; the details are in the log only."""

    situation = "internal_error"


class UpstreamError(GatewayError):
    """The upstream could not give an answer."""


class UpstreamUnavailable(UpstreamError):
    """The upstream refused the connection, could not be reached, or broke the exchange."""

    situation = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within ``upstream.read_timeout``."""

    situation = "upstream_timeout"


class UpstreamAborted(Exception):
    """The upstream failed after the response had started; the client connection must be closed."""
