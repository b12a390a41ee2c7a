"""Per-key rate limits: ``limits``' fixed-window algorithm, counted in this process's memory.

The design notes: docs/internals.md, "gateway/ratelimit/limiter.py"."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from limits import RateLimitItem

from gateway.store import WindowCount
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

    __slots__ = ("amounts", "counts", "ends", "lengths", "limits", "specs")

    def __init__(self, limits: Limits, shape: _Shape) -> None:
        self.limits = limits
        # Shared by every key with the same limits: only the counts and ends are per key.
        self.amounts, self.lengths, self.specs = shape
        self.counts = [0] * len(limits)
        self.ends = [0.0] * len(limits)


# A set of limits' amounts, lengths in seconds, and specs ("<amount>/<seconds>", as windows are saved).
_Shape = tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]]


class Limiter:
    MIN_SWEEP_INTERVAL = 1024

    def __init__(self, *, clock: Callable[[], float] = time.time, scope: str = "key") -> None:
        self.clock = clock
        self.scope = scope  # whose windows these are, as they are saved
        self._keys: dict[str, _KeyWindows] = {}
        self._until_sweep = self.MIN_SWEEP_INTERVAL
        # Each distinct set of limits (usually just the default one): its shape.
        self._shapes: dict[Limits, _Shape] = {}
        # Keys charged since their windows were last taken to be saved.
        self._changed: set[str] = set()
        # Windows saved by an earlier process, by key then spec, until the key's first request.
        self._restored: dict[str, dict[str, tuple[int, float]]] = {}

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
            self._changed.add(key_id)
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
                tuple(f"{item.amount}/{item.get_expiry()}" for item in limits),
            )
        state = self._keys[key_id] = _KeyWindows(limits, shape)
        saved = self._restored.pop(key_id, None) if self._restored else None
        if saved:
            for i, spec in enumerate(state.specs):
                hits, ends_at = saved.get(spec, (0, 0.0))
                if ends_at > now:  # a window with other limits than today's is not resumed
                    state.counts[i], state.ends[i] = hits, ends_at
        return state

    def take_changed(self) -> list[WindowCount]:
        """The open windows of every key charged since the last call, to be saved."""
        now = self.clock()
        changed, self._changed = self._changed, set()
        taken = []
        for key_id in changed:
            state = self._keys.get(key_id)
            if state is None:
                continue
            for spec, hits, ends_at in zip(state.specs, state.counts, state.ends, strict=True):
                if hits and ends_at > now:
                    taken.append(WindowCount(self.scope, key_id, spec, hits, ends_at))
        return taken

    def put_back(self, windows: Iterable[WindowCount]) -> None:
        """Windows that could not be saved: taken again (as they are then) by the next call."""
        self._changed.update(w.owner for w in windows)

    def restore(self, windows: Sequence[WindowCount]) -> None:
        """Resume windows saved by an earlier process: each key's at its first request (its limits
        are known only then)."""
        for w in windows:
            if w.scope == self.scope:
                self._restored.setdefault(w.owner, {})[w.spec] = (w.hits, w.ends_at)

    def sweep(self, now: float | None = None) -> None:
        """Forget the keys whose windows have all closed."""
        now = self.clock() if now is None else now
        closed = [key_id for key_id, state in self._keys.items() if max(state.ends) <= now]
        for key_id in closed:
            del self._keys[key_id]
        if self._restored:
            ended = [key_id for key_id, saved in self._restored.items() if max(e for _, e in saved.values()) <= now]
            for key_id in ended:
                del self._restored[key_id]
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
