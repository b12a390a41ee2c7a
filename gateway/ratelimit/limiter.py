"""Rate limits per key, and per user over all its keys: ``limits``' fixed-window algorithm,
counted in this process's memory.

The design notes: docs/internals.md, "gateway/ratelimit/limiter.py"."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from limits import RateLimitItem

from gateway.store import WindowCount
from gateway.units import Limits

__all__ = ["KEY", "USER", "Charge", "Decision", "Limiter", "Window", "choose_shown"]

# Whose windows: a key's own, or its user's (every key of the user counted together).
KEY = "key"
USER = "user"


class Window(NamedTuple):
    # NamedTuples, not frozen dataclasses: several are made on every request, and a frozen
    # dataclass's __init__ costs several times more.
    item: RateLimitItem
    remaining: int
    reset_at: float  # Unix time at which the window closes
    scope: str = KEY


class Decision(NamedTuple):
    allowed: bool
    # The window the headers describe: the one that denied the request, or the one closest to
    # running out (fewest remaining; on a tie, the one that resets later). None when every limit
    # is only observed.
    shown: Window | None
    # The enforced windows (observed ones are never shown to clients).
    windows: tuple[Window, ...]
    # Observed windows that would have refused this request (it was not refused).
    observed: tuple[Window, ...] = ()


class Charge(NamedTuple):
    """One owner's windows that a request is charged to: the scope ("key", "user", or a route's,
    "key:POST /api/v1/mockups/generate"), the key's or user's id, the limits, and whether they are
    only observed (counted, never refusing)."""

    scope: str
    owner: str
    limits: Limits
    observe: bool = False


# One owner's windows, as one plain list: [its limits, their shape, n counts (how many requests
# each window has counted), n ends (when each closes)]. Not an object holding lists: there is one
# per key and user in use (half the memory), and a plain list's items are read by the
# interpreter's fastest path (a list subclass's are not). LIMITS, SHAPE and FIRST name the places.
_Windows = list[Any]
LIMITS, SHAPE, FIRST = 0, 1, 2


def _windows(limits: Limits, shape: _Shape) -> _Windows:
    windows: _Windows = [0] * (FIRST + 2 * len(limits))  # (allocated to the item: no spare room)
    windows[LIMITS], windows[SHAPE] = limits, shape
    return windows


# A set of limits' amounts, lengths in seconds, and specs ("<amount>/<seconds>", as windows are saved).
_Shape = tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]]


class Limiter:
    MIN_SWEEP_INTERVAL = 1024

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        # By scope, then owner. The keys' records are also ``_keys``: the common request is
        # charged to its key alone, and that path looks nothing else up.
        self._records: dict[str, dict[str, _Windows]] = {KEY: {}, USER: {}}
        self._keys = self._records[KEY]
        self._until_sweep = self.MIN_SWEEP_INTERVAL
        # Each distinct set of limits (usually just the default one): its shape.
        self._shapes: dict[Limits, _Shape] = {}
        # Owners charged since their windows were last taken to be saved, by scope.
        self._changed: dict[str, set[str]] = {KEY: set(), USER: set()}
        self._changed_keys = self._changed[KEY]
        # Windows saved by an earlier process, by scope, owner and spec, until the owner's first request.
        self._restored: dict[str, dict[str, dict[str, tuple[int, float]]]] = {}

    def __len__(self) -> int:
        return sum(len(records) for records in self._records.values())

    def hit(self, key_id: str, limits: Limits) -> Decision:
        """Charge one request to every window of the key, or to none if any is full."""
        now = self.clock()
        state = self._keys.get(key_id)
        if state is None or (state[LIMITS] is not limits and state[LIMITS] != limits):
            state = self._new_state(KEY, key_id, limits, now)
        amounts, lengths, _ = state[SHAPE]
        n = len(amounts)
        allowed = True
        for i, amount in enumerate(amounts, FIRST):
            if state[n + i] <= now:
                state[i] = 0  # closed: the next request charged opens a new window
            elif state[i] >= amount:
                allowed = False
        if allowed:
            for i, length in enumerate(lengths, FIRST):
                if state[i] == 0:
                    state[n + i] = now + length
                state[i] += 1
            self._changed_keys.add(key_id)
        windows = tuple(
            [
                Window(item, amounts[i] - state[FIRST + i], state[FIRST + n + i] if state[FIRST + i] else now)
                for i, item in enumerate(limits)
            ]
        )
        return Decision(allowed, choose_shown(allowed, windows), windows)

    def hit_all(self, charges: Sequence[Charge]) -> Decision:
        """Charge one request to every window of every owner, or to none if any enforced one is
        full: all are tested, then all are charged, in one synchronous step (exact under any
        concurrency). An observed window never refuses; once full it counts no further, and each
        request it would have refused is reported in ``Decision.observed``."""
        now = self.clock()
        states = []
        allowed = True
        for scope, owner, limits, observe in charges:
            records = self._records.get(scope)
            state = records.get(owner) if records is not None else None
            if state is None or (state[LIMITS] is not limits and state[LIMITS] != limits):
                state = self._new_state(scope, owner, limits, now)
            states.append(state)
            amounts = state[SHAPE][0]
            n = len(amounts)
            for i, amount in enumerate(amounts, FIRST):
                if state[n + i] <= now:
                    state[i] = 0
                elif state[i] >= amount and not observe:
                    allowed = False
        windows: list[Window] = []
        observed: list[Window] = []
        for (scope, owner, limits, observe), state in zip(charges, states, strict=True):
            amounts, lengths, _ = state[SHAPE]
            n = len(amounts)
            for i, item in enumerate(limits):
                count = FIRST + i
                if observe and state[count] >= amounts[i]:
                    if allowed:
                        observed.append(Window(item, 0, state[count + n], scope))
                    continue
                if allowed:
                    if state[count] == 0:
                        state[count + n] = now + lengths[i]
                    state[count] += 1
                if not observe:
                    left = amounts[i] - state[count]
                    windows.append(Window(item, left, state[count + n] if state[count] else now, scope))
            if allowed:
                self._changed.setdefault(scope, set()).add(owner)
        shown = tuple(windows)
        return Decision(allowed, choose_shown(allowed, shown) if shown else None, shown, tuple(observed))

    def retry_after(self, window: Window) -> int:
        """Whole seconds until ``window`` closes, rounded up, at least 1."""
        return max(1, math.ceil(window.reset_at - self.clock()))

    def _new_state(self, scope: str, owner: str, limits: Limits, now: float) -> _Windows:
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
        state = self._records.setdefault(scope, {})[owner] = _windows(limits, shape)
        restored = self._restored.get(scope)
        saved = restored.pop(owner, None) if restored else None
        if saved:
            specs = shape[2]
            for i, spec in enumerate(specs):
                hits, ends_at = saved.get(spec, (0, 0.0))
                if ends_at > now:  # a window with other limits than today's is not resumed
                    state[FIRST + i], state[FIRST + len(specs) + i] = hits, ends_at
        return state

    def take_changed(self) -> list[WindowCount]:
        """The open windows of every owner charged since the last call, to be saved."""
        now = self.clock()
        taken = []
        for scope, changed in self._changed.items():
            records = self._records.get(scope, {})
            for owner in changed:
                state = records.get(owner)
                if state is None:
                    continue
                specs = state[SHAPE][2]
                n = len(specs)
                for spec, hits, ends_at in zip(specs, state[FIRST : FIRST + n], state[FIRST + n :], strict=True):
                    if hits and ends_at > now:
                        taken.append(WindowCount(scope, owner, spec, hits, ends_at))
            changed.clear()
        return taken

    def put_back(self, windows: Iterable[WindowCount]) -> None:
        """Windows that could not be saved: taken again (as they are then) by the next call."""
        for w in windows:
            self._changed.setdefault(w.scope, set()).add(w.owner)

    def restore(self, windows: Sequence[WindowCount]) -> None:
        """Resume windows saved by an earlier process: each owner's at its first request (its
        limits are known only then)."""
        for w in windows:
            self._restored.setdefault(w.scope, {}).setdefault(w.owner, {})[w.spec] = (w.hits, w.ends_at)

    def sweep(self, now: float | None = None) -> None:
        """Forget the owners whose windows have all closed."""
        now = self.clock() if now is None else now
        for records in self._records.values():
            closed = [owner for owner, state in records.items() if max(state[FIRST + len(state[LIMITS]) :]) <= now]
            for owner in closed:
                del records[owner]
        for restored in self._restored.values():
            ended = [owner for owner, saved in restored.items() if max(e for _, e in saved.values()) <= now]
            for owner in ended:
                del restored[owner]
        self._until_sweep = max(self.MIN_SWEEP_INTERVAL, len(self))


def choose_shown(allowed: bool, windows: tuple[Window, ...]) -> Window:
    """The window the response headers describe (see ``Decision.shown``)."""
    if allowed:
        return windows[0] if len(windows) == 1 else min(windows, key=_closest_to_running_out)
    return max((w for w in windows if w.remaining <= 0), key=_reset_at)


def _closest_to_running_out(window: Window) -> tuple[int, float]:
    return window.remaining, -window.reset_at


def _reset_at(window: Window) -> float:
    return window.reset_at
