"""Fakes at the edges, shared by the in-process tests: a clock that moves only when told."""

from __future__ import annotations

__all__ = ["Clock"]


class Clock:
    """A clock for code that takes ``clock=``: it reads ``now``, and only ``tick`` moves it."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds
