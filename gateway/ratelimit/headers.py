"""The rate-limit headers on every response that went through the limiter (``rate_limits.headers``).

``x-ratelimit``: ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (Unix
time in seconds) of the window shown: the one that denied the request, or the one closest to
running out. ``ietf``: ``RateLimit-Policy`` and ``RateLimit`` of
draft-ietf-httpapi-ratelimit-headers-11, one item per window, e.g.
``RateLimit-Policy: "minute";q=100;w=60, "day";q=10000;w=86400`` and
``RateLimit: "minute";r=95;t=42, "day";r=9995;t=86342``. ``both``, or ``none``.
"""

from __future__ import annotations

import math

from gateway.config import RateLimitHeaders
from gateway.ratelimit.limiter import KEY, Decision, Window
from gateway.units import window_name

__all__ = ["RATE_LIMIT_HEADERS", "RateLimitHeaderWriter"]

_LIMIT, _REMAINING, _RESET = _LEGACY = (b"x-ratelimit-limit", b"x-ratelimit-remaining", b"x-ratelimit-reset")
_POLICY, _STATE = _IETF = (b"ratelimit-policy", b"ratelimit")
# The header names each rate_limits.headers mode writes.
RATE_LIMIT_HEADERS: dict[str, tuple[bytes, ...]] = {
    "x-ratelimit": _LEGACY,
    "ietf": _IETF,
    "both": _LEGACY + _IETF,
    "none": (),
}

Headers = list[tuple[bytes, bytes]]


def _name(window: Window) -> str:
    """A window's name in the IETF headers: "minute" for a key's, "user-minute" for its user's."""
    return window_name(window.item) if window.scope == KEY else f"{window.scope}-{window_name(window.item)}"


class RateLimitHeaderWriter:
    def __init__(self, mode: RateLimitHeaders) -> None:
        self._legacy = mode in ("x-ratelimit", "both")
        self._ietf = mode in ("ietf", "both")

    def headers(self, decision: Decision, now: float) -> Headers:
        headers: Headers = []
        shown = decision.shown
        if shown is None:
            return headers  # every limit only observed: nothing a client is held to
        if self._legacy:
            headers += [
                (_LIMIT, str(shown.item.amount).encode()),
                (_REMAINING, str(shown.remaining).encode()),
                (_RESET, str(math.ceil(shown.reset_at)).encode()),
            ]
        if self._ietf:
            policy = ", ".join(f'"{_name(w)}";q={w.item.amount};w={w.item.get_expiry()}' for w in decision.windows)
            state = ", ".join(
                f'"{_name(w)}";r={w.remaining};t={max(0, math.ceil(w.reset_at - now))}' for w in decision.windows
            )
            headers += [(_POLICY, policy.encode()), (_STATE, state.encode())]
        return headers
