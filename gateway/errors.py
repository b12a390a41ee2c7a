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
    │   └── AuthThrottled         rate_limited           (429: too many look-ups of unknown keys)
    ├── ConcurrencyLimited        concurrency_limited    (429, with Retry-After: too many in flight)
    ├── PayloadTooLarge           payload_too_large      (413)
    ├── BadRequest                bad_request            (400: a request that cannot be forwarded)
    ├── MethodNotAllowed          method_not_allowed     (405: TRACE and CONNECT, with Allow)
    ├── RequestTimeout            request_timeout        (408: head or body too slow)
    ├── HeadersTooLarge           headers_too_large      (431)
    ├── StoreUnavailable          store_unavailable      (503, with Retry-After: a key not in the cache)
    ├── Overloaded                overloaded             (503, with Retry-After: too many connections)
    ├── UpstreamBusy              overloaded             (503, with Retry-After: no free upstream connection)
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
    "AuthThrottled",
    "AuthenticationError",
    "BadRequest",
    "ConcurrencyLimited",
    "GatewayError",
    "HeadersTooLarge",
    "InternalError",
    "InvalidCredentials",
    "MethodNotAllowed",
    "MissingCredentials",
    "Overloaded",
    "PayloadTooLarge",
    "RateLimited",
    "RequestTimeout",
    "StoreUnavailable",
    "SubscriptionInactive",
    "UpstreamAborted",
    "UpstreamBusy",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class GatewayError(Exception):
    """A request the gateway answers itself, in the active error profile."""

    situation: str = ""
    # The outcome in the metrics and the access log, where it says more than the situation does.
    outcome: str = ""

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
    """A rate-limit window is full; ``window`` is its length, e.g. "60s", and ``scope`` whose
    window it is: the key's ("key"), its user's over all its keys ("user"), or the client
    address's failed authentications ("address")."""

    situation = "rate_limited"

    def __init__(self, *, limit: int, window: str, retry_after: int, scope: str = "key") -> None:
        super().__init__(
            f"rate limit of {limit} per {window} reached ({scope})",
            params={"limit": limit, "window": window, "retry_after": retry_after, "scope": scope},
            headers={"Retry-After": str(retry_after)},
        )


class AuthThrottled(RateLimited):
    """The client address has used up its look-ups of unknown keys for the window (``auth/throttle.py``)."""

    outcome = "auth_throttled"


class ConcurrencyLimited(GatewayError):
    """The key (or its user) already has ``limits.max_concurrent_per_key`` (``_per_user``) requests in
    flight to the upstream."""

    situation = "concurrency_limited"

    def __init__(self, max_concurrent: int) -> None:
        super().__init__(
            f"{max_concurrent} requests of this key already in flight",
            params={"max_concurrent": max_concurrent, "retry_after": 1},
            headers={"Retry-After": "1"},
        )


class InsufficientCredits(GatewayError):
    """The user's credit balance cannot pay for the request (credits.wallet); never forwarded."""

    situation = "insufficient_credits"

    def __init__(self, *, required: int, balance: int) -> None:
        super().__init__(
            f"the request costs {required} credits, the balance is {balance}",
            params={"required": required, "balance": balance},
        )


class PayloadTooLarge(GatewayError):
    """The request body is larger than ``limits.max_body_bytes``."""

    situation = "payload_too_large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"request body over {max_bytes} bytes", params={"max_bytes": max_bytes})


class BadRequest(GatewayError):
    """A request the gateway will not forward: unparseable, or a target that is not a path."""

    situation = "bad_request"


# Every method but TRACE (it would echo the request, Authorization included, back to a script
# that could not read it otherwise) and CONNECT (a tunnel past the gateway).
ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


class MethodNotAllowed(GatewayError):
    situation = "method_not_allowed"

    def __init__(self, method: str) -> None:
        super().__init__(f"method {method} refused", params={"method": method}, headers={"Allow": ALLOWED_METHODS})


class RequestTimeout(GatewayError):
    """The request head, or the next part of its body, did not arrive in time."""

    situation = "request_timeout"


class HeadersTooLarge(GatewayError):
    """The request head is over ``limits.max_header_bytes`` or has more than ``limits.max_headers`` headers."""

    situation = "headers_too_large"

    def __init__(self, max_bytes: int, max_headers: int) -> None:
        super().__init__("request head too large", params={"max_bytes": max_bytes, "max_headers": max_headers})


class StoreUnavailable(GatewayError):
    """The key store cannot be read, and the key is not in the cache: neither let in nor turned away."""

    situation = "store_unavailable"

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason, headers={"Retry-After": str(retry_after)})


class Overloaded(GatewayError):
    """More connections are open than ``limits.max_connections``, or the gateway is stopping."""

    situation = "overloaded"

    def __init__(self, reason: str = "too many connections") -> None:
        super().__init__(reason, headers={"Retry-After": "1"})


class UpstreamBusy(GatewayError):
    """Every upstream connection stayed busy for ``upstream.pool_timeout``."""

    situation = "overloaded"
    outcome = "upstream_busy"

    def __init__(self) -> None:
        super().__init__("no free upstream connection", headers={"Retry-After": "1"})


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
