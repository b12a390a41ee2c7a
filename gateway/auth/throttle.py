"""Throttling of key look-ups per client address (``auth_failures.limit``).

The design notes: docs/internals.md, "gateway/auth/throttle.py"."""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from typing import Final

from limits import RateLimitItem

__all__ = ["LookupThrottle"]

MAX_ADDRESSES: Final = 100_000
# Where the addresses not tracked (the table is full of open windows) are counted, all together.
_UNTRACKED: Final = "*"
# How often a full table is swept of closed windows at most (a sweep reads every entry).
_SWEEP_EVERY: Final = 1.0


def _client(address: str) -> str:
    """What one client is: its IPv4 address, or the /64 network of its IPv6 one (an attacker with
    one IPv6 network holds 2**64 addresses)."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d (a dual-stack socket): an IPv4 client
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False).network_address)


class LookupThrottle:
    def __init__(
        self, limit: RateLimitItem, *, clock: Callable[[], float] = time.time, max_addresses: int = MAX_ADDRESSES
    ) -> None:
        self.limit = limit
        self._max_addresses = max_addresses
        self._amount = limit.amount
        self._length = limit.get_expiry()
        self._clock = clock
        # address -> [look-ups counted, end of the window]
        self._windows: dict[str, list[float]] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._windows)

    def reserve(self, address: str) -> int | None:
        """Count one look-up for ``address``; or, if its window is used up, the seconds until it may
        try again (and nothing is counted)."""
        now = self._clock()
        client = _client(address)
        window = self._windows.get(client)
        if window is None and len(self._windows) >= self._max_addresses:
            if now >= self._next_sweep:
                self._next_sweep = now + _SWEEP_EVERY
                self._sweep(now)
            if len(self._windows) >= self._max_addresses:
                # Full of open windows (a flood from many addresses): the newcomers share one
                # window, so that filling the table switches no throttle off.
                client = _UNTRACKED
                window = self._windows.get(client)
        if window is not None and window[1] > now:
            if window[0] >= self._amount:
                return max(1, math.ceil(window[1] - now))
            window[0] += 1
            return None
        self._windows[client] = [1, now + self._length]
        return None

    def refund(self, address: str) -> None:
        """The look-up counted for ``address`` found a good key: it was no failure."""
        window = self._windows.get(_client(address)) or self._windows.get(_UNTRACKED)
        if window is not None and window[0] > 0:
            window[0] -= 1

    def _sweep(self, now: float) -> None:
        for address in [a for a, window in self._windows.items() if window[1] <= now]:
            del self._windows[address]
