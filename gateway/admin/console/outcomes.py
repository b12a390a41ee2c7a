"""Requests by outcome over the last hour, for the overview.

The metrics count since the process started (``accounting/metrics.py``, every worker of this
``gateway serve`` together): the history keeps a snapshot of those counts a minute, for an hour,
and the last hour is what the counts grew since the snapshot of an hour ago (or since the oldest
one, in a process younger than an hour). It covers this ``serve``'s workers, not other replicas.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["HOUR", "OutcomeHistory", "RecentOutcomes"]

HOUR = 3600.0
SAMPLE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class RecentOutcomes:
    since: float  # when the counts start: an hour ago, or this process's first snapshot
    counts: dict[str, int]  # the outcomes seen since then, none at zero


class OutcomeHistory:
    def __init__(self, read: Callable[[], Mapping[str, int]], clock: Callable[[], float] = time.time) -> None:
        """``read``: the counts by outcome now (Metrics.outcome_totals)."""
        self._read = read
        self._clock = clock
        self._snapshots: deque[tuple[float, dict[str, int]]] = deque()
        self.sample()

    def sample(self) -> None:
        """Keep a snapshot, unless one was kept less than a minute ago; forget those past an hour
        that a newer one over an hour old stands in for."""
        now = self._clock()
        if self._snapshots and now - self._snapshots[-1][0] < SAMPLE_SECONDS:
            return
        self._snapshots.append((now, dict(self._read())))
        while len(self._snapshots) > 1 and self._snapshots[1][0] <= now - HOUR:
            self._snapshots.popleft()

    def last_hour(self) -> RecentOutcomes:
        self.sample()
        now, counts = self._clock(), self._read()
        since, then = self._snapshots[0]
        for at, snapshot in self._snapshots:  # the newest at least an hour old, else the oldest
            if at > now - HOUR:
                break
            since, then = at, snapshot
        grown = {name: count - then.get(name, 0) for name, count in counts.items()}
        return RecentOutcomes(since, {name: n for name, n in grown.items() if n > 0})

    async def sample_forever(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            self.sample()
