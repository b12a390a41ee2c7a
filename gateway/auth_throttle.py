"""Throttling of failed authentications per client address (``auth_failures.limit``).

Each address may fail (send a key that is malformed, unknown, revoked or expired) a number of
times per fixed window, 20 a minute by default; after that, its requests get 429 until the window
ends, before any key is checked, so guessing keys from one address is slow and costs the store
nothing. Other addresses are not affected, and a valid key from a throttled address is refused
too until the window ends: the throttle cannot tell a guess from a hit.

The address is the peer's, or, when the peer is in ``proxy.trusted_peers``, the last one its
X-Forwarded-For names. At most ``MAX_ADDRESSES`` (100,000) are tracked; past that, closed windows are
swept, and if none is closed, new addresses go untracked until one is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from limits import RateLimitItem

__all__ = ["FailureThrottle"]

MAX_ADDRESSES: Final = 100_000


class FailureThrottle:
    def __init__(
        self, limit: RateLimitItem, *, clock: Callable[[], float] = time.time, max_addresses: int = MAX_ADDRESSES
    ) -> None:
        self.limit = limit
        self._max_addresses = max_addresses
        self._amount = limit.amount
        self._length = limit.get_expiry()
        self._clock = clock
        # address -> [failures counted, end of the window]
        self._windows: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None if it is not throttled."""
        window = self._windows.get(address)
        if window is None:
            return None
        now = self._clock()
        if window[1] <= now:
            del self._windows[address]
            return None
        if window[0] >= self._amount:
            return max(1, math.ceil(window[1] - now))
        return None

    def failed(self, address: str) -> None:
        now = self._clock()
        window = self._windows.get(address)
        if window is not None and window[1] > now:
            window[0] += 1
            return
        if len(self._windows) >= self._max_addresses:
            self._sweep(now)
            if len(self._windows) >= self._max_addresses:
                return
        self._windows[address] = [1, now + self._length]

    def _sweep(self, now: float) -> None:
        for address in [a for a, window in self._windows.items() if window[1] <= now]:
            del self._windows[address]
