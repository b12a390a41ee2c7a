"""Per-key rate limits: ``limits``' fixed-window algorithm, counted in this process's memory.

The design notes: docs/internals.md, "gateway/ratelimit/limiter.py"."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

from limits import RateLimitItem

from gateway.units import Limits

__all__ = ["Decision", "Limiter", "Window", "choose_shown"]


class Window(NamedTuple):
    # NamedTuples, not frozen dataclasses: several are made on every request, and a frozen
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


class _KeyWindows:
    """One API key's windows: how many requests each has counted, and when each closes."""

    __slots__ = ("amounts", "counts", "ends", "lengths", "limits")

    def __init__(self, limits: Limits, amounts: tuple[int, ...], lengths: tuple[int, ...]) -> None:
        self.limits = limits
        # Shared by every key with the same limits: only the counts and ends are per key.
        self.amounts = amounts
        self.lengths = lengths
        self.counts = [0] * len(limits)
        self.ends = [0.0] * len(limits)


class Limiter:
    MIN_SWEEP_INTERVAL = 1024

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._keys: dict[str, _KeyWindows] = {}
        self._until_sweep = self.MIN_SWEEP_INTERVAL
        # Each distinct set of limits (usually just the default one): amounts and lengths.
        self._shapes: dict[Limits, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def hit(self, key_id: str, limits: Limits) -> Decision:
        """Charge one request to every window of the key, or to none if any is full."""
        now = self.clock()
        state = self._keys.get(key_id)
        if state is None or (state.limits is not limits and state.limits != limits):
            state = self._new_state(key_id, limits, now)
        amounts, lengths, counts, ends = state.amounts, state.lengths, state.counts, state.ends
        allowed = True
        for i, amount in enumerate(amounts):
            if ends[i] <= now:
                counts[i] = 0  # closed: the next request charged opens a new window
            elif counts[i] >= amount:
                allowed = False
        if allowed:
            for i, length in enumerate(lengths):
                if counts[i] == 0:
                    ends[i] = now + length
                counts[i] += 1
        windows = tuple(
            [Window(item, amounts[i] - counts[i], ends[i] if counts[i] else now) for i, item in enumerate(limits)]
        )
        return Decision(allowed, choose_shown(allowed, windows), windows)

    def retry_after(self, window: Window) -> int:
        """Whole seconds until ``window`` closes, rounded up, at least 1."""
        return max(1, math.ceil(window.reset_at - self.clock()))

    def _new_state(self, key_id: str, limits: Limits, now: float) -> _KeyWindows:
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self.sweep(now)
        # Hashing limits costs microseconds (RateLimitItem.__hash__ is Python): only done here.
        shape = self._shapes.get(limits)
        if shape is None:
            shape = self._shapes[limits] = (
                tuple(item.amount for item in limits),
                tuple(item.get_expiry() for item in limits),
            )
        state = self._keys[key_id] = _KeyWindows(limits, *shape)
        return state

    def sweep(self, now: float | None = None) -> None:
        """Forget the keys whose windows have all closed."""
        now = self.clock() if now is None else now
        closed = [key_id for key_id, state in self._keys.items() if max(state.ends) <= now]
        for key_id in closed:
            del self._keys[key_id]
        self._until_sweep = max(self.MIN_SWEEP_INTERVAL, len(self._keys))


def choose_shown(allowed: bool, windows: tuple[Window, ...]) -> Window:
    """The window the response headers describe (see ``Decision.shown``)."""
    if allowed:
        return windows[0] if len(windows) == 1 else min(windows, key=_closest_to_running_out)
    return max((w for w in windows if w.remaining <= 0), key=_reset_at)


def _closest_to_running_out(window: Window) -> tuple[int, float]:
    return window.remaining, -window.reset_at


def _reset_at(window: Window) -> float:
    return window.reset_at
