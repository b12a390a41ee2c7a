"""Per-key rate limits: ``limits``' fixed-window strategy over a compact in-memory storage.

The algorithm is ``limits``' fixed window (``FixedWindowRateLimiter``): a key's window opens at
its first request and lasts the window's length; up to the limit pass, then none until it
closes. That is the Mockupanda behaviour: 100 requests in the first 30 s of a minute, then none
until the minute has passed. ``Limiter.hit`` performs that strategy's three operations (test,
hit, window stats) on a ``limits`` storage, with each window's storage key computed once per
API key (``quotas``) rather than on every call, which is most of the strategy's cost.

Every window of a key is enforced, and a request denied by one window is charged to none: all
are tested first, and only if all have room are all hit. On the in-memory storage that whole
test-then-hit is one synchronous call (``CompactMemoryStorage.charge``), so nothing can interleave
and the count is exact under any concurrency within one process; it also spares the hot path six
awaits through ``limits``' error-wrapping layer.

The storage is ours, registered with ``limits`` as ``gateway-memory://``, because ``limits``' own
memory storage rescans every key after each request once there are many: 0.6 ms per request with
100,000 keys, against a few microseconds here (see bench/README.md). Expired windows are swept
out once as many requests have been counted as there are windows, so each request pays O(1) on
average and memory follows the number of keys active within their windows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage

__all__ = [
    "CompactMemoryStorage",
    "Decision",
    "Limiter",
    "Quota",
    "Window",
    "format_limits",
    "parse_limits",
    "quotas",
    "window_name",
]


def parse_limits(text: str | Sequence[str]) -> tuple[RateLimitItem, ...]:
    """``"1000/minute;100000/day"`` or ``["100/minute", "10000/day"]``; ValueError if it is neither."""
    joined = text if isinstance(text, str) else ";".join(text)
    if not joined.strip():
        raise ValueError("at least one limit such as 100/minute")
    try:
        items = tuple(parse_many(joined))
    except ValueError:
        raise ValueError("limits such as 100/minute;10000/day") from None
    if not items or any(item.amount < 1 for item in items):
        raise ValueError("limits such as 100/minute;10000/day")
    return items


def format_limits(items: Sequence[RateLimitItem]) -> str:
    """The canonical ``"100/1minute;10000/1day"`` form, which ``parse_limits`` reads back."""
    return ";".join(f"{item.amount}/{item.multiples} {item.GRANULARITY.name}" for item in items)


def window_name(item: RateLimitItem) -> str:
    """``minute`` for a limit per minute, ``5minutes`` for one per 5 minutes."""
    name = item.GRANULARITY.name
    return name if item.multiples == 1 else f"{item.multiples}{name}s"


class CompactMemoryStorage(Storage):
    """A ``limits`` storage in two plain dicts (see the module docstring)."""

    STORAGE_SCHEME = ["gateway-memory"]
    MIN_SWEEP_INTERVAL = 1024

    def __init__(
        self, uri: str | None = None, wrap_exceptions: bool = False, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(uri, wrap_exceptions)
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._expires: dict[str, float] = {}
        self._until_sweep = self.MIN_SWEEP_INTERVAL

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    def __len__(self) -> int:
        return len(self._counts)

    def sweep(self) -> None:
        """Drop every expired window."""
        now = self._clock()
        expired = [key for key, expires in self._expires.items() if expires <= now]
        for key in expired:
            del self._counts[key], self._expires[key]
        self._until_sweep = max(self.MIN_SWEEP_INTERVAL, len(self._counts))

    def charge(self, keys: Sequence[str], items: Sequence[RateLimitItem]) -> tuple[bool, list[int], list[float]]:
        """The fixed-window test-then-hit for all of a key's windows in one synchronous call (so
        nothing can interleave): whether it was allowed, and each window's count and expiry."""
        now = self._clock()
        counts = [self._count(key, now) for key in keys]
        allowed = all(count < item.amount for count, item in zip(counts, items, strict=True))
        if allowed:
            counts = [self._incr(key, item.get_expiry(), 1, now) for key, item in zip(keys, items, strict=True)]
        expiries = [self._expires.get(key, now) if count else now for key, count in zip(keys, counts, strict=True)]
        return allowed, counts, expiries

    def _count(self, key: str, now: float) -> int:
        expires = self._expires.get(key)
        if expires is None or expires <= now:
            return 0
        return self._counts[key]

    def _incr(self, key: str, expiry: float, amount: int, now: float) -> int:
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self.sweep()
        expires = self._expires.get(key)
        if expires is None or expires <= now:
            self._expires[key] = now + expiry
            self._counts[key] = amount
            return amount
        count = self._counts[key] + amount
        self._counts[key] = count
        return count

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        return self._incr(key, expiry, amount, self._clock())

    async def get(self, key: str) -> int:
        return self._count(key, self._clock())

    async def get_expiry(self, key: str) -> float:
        now = self._clock()
        expires = self._expires.get(key)
        return expires if expires is not None and expires > now else now

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        count = len(self._counts)
        self._counts.clear()
        self._expires.clear()
        return count

    async def clear(self, key: str) -> None:
        self._counts.pop(key, None)
        self._expires.pop(key, None)


@dataclass(frozen=True, slots=True)
class Quota:
    """The windows of one API key: its limits (often the shared default tuple) and, computed
    once, each window's storage key."""

    items: tuple[RateLimitItem, ...]
    keys: tuple[str, ...]


def quotas(key_id: str, items: tuple[RateLimitItem, ...]) -> Quota:
    # Short storage keys: the key id, the amount and the window's length identify a window.
    return Quota(items, tuple(f"{key_id}/{item.amount}/{item.get_expiry()}" for item in items))


class Window(NamedTuple):
    # NamedTuples, not frozen dataclasses: two are made on every request, and a frozen
    # dataclass's __init__ costs several times more.
    item: RateLimitItem
    remaining: int
    reset_at: float  # Unix time at which the window closes


class Decision(NamedTuple):
    allowed: bool
    # The window the headers describe: the one that denied the request, or the one closest to
    # running out (fewest remaining; on a tie, the one that resets later).
    shown: Window
    windows: tuple[Window, ...]


class Limiter:
    def __init__(self, storage: Storage, *, clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self.clock = clock

    async def hit(self, quota: Quota) -> Decision:
        """Charge one request to every window of a key, or to none if any is full."""
        storage = self._storage
        if isinstance(storage, CompactMemoryStorage):
            allowed, counts, expiries = storage.charge(quota.keys, quota.items)
        else:
            pairs = list(zip(quota.items, quota.keys, strict=True))
            counts = [await storage.get(key) for _, key in pairs]
            allowed = all(count < item.amount for count, (item, _) in zip(counts, pairs, strict=True))
            if allowed:
                counts = [await storage.incr(key, item.get_expiry()) for item, key in pairs]
            expiries = [await storage.get_expiry(key) for key in quota.keys]
        windows = tuple(
            [
                Window(item, max(0, item.amount - count), expires)
                for item, count, expires in zip(quota.items, counts, expiries, strict=True)
            ]
        )
        if allowed:
            shown = min(windows, key=lambda w: (w.remaining, -w.reset_at))
        else:
            denied = [w for w in windows if w.remaining == 0]
            shown = max(denied, key=lambda w: w.reset_at)
        return Decision(allowed=allowed, shown=shown, windows=windows)

    def retry_after(self, window: Window) -> int:
        """Whole seconds until ``window`` closes, rounded up, at least 1."""
        return max(1, math.ceil(window.reset_at - self.clock()))
