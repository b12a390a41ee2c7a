"""Usage per key, counted in memory on the hot path and written to the store in the background.

The design notes: docs/internals.md, "gateway/accounting/usage.py"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from gateway.accounting.metrics import Metrics
from gateway.accounting.wallet import Wallet
from gateway.config import CreditRule
from gateway.routes import matches, normalized_path
from gateway.store import KeyStore, UsageDelta, WindowCount
from gateway.units import utc_day

__all__ = ["CreditRules", "UsageRecorder", "WindowSource"]

logger = logging.getLogger("gateway.error")


class CreditRules:
    def __init__(self, rules: tuple[CreditRule, ...]) -> None:
        self._rules = rules

    def cost(self, method: str, path: str) -> int:
        """The first matching rule's cost, or 0."""
        if not self._rules:
            return 0
        path = normalized_path(path)
        for rule in self._rules:
            if matches(rule, method, path):
                return rule.cost
        return 0


class WindowSource(Protocol):
    """Rate-limit windows counted in memory (the limiter, without Redis), saved with each flush."""

    def take_changed(self) -> list[WindowCount]: ...

    def put_back(self, windows: Iterable[WindowCount]) -> None: ...


class UsageRecorder:
    def __init__(
        self,
        store: KeyStore,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        windows: WindowSource | None = None,
        history_days: int = 400,
        wallet: Wallet | None = None,
    ) -> None:
        self._store = store
        self._windows = windows
        self._wallet = wallet
        self._metrics = metrics
        self._clock = clock
        self._history_days = history_days
        # What is pending for the current UTC day; the days before it that are still unwritten
        # (a day ended between two flushes, or writes failed across midnight).
        self._pending: dict[str, UsageDelta] = {}
        self._day, self._day_ends = utc_day(clock())
        self._earlier: dict[str, dict[str, UsageDelta]] = {}
        self._kept_since: str | None = None  # the history last trimmed to start there
        self._stopping = asyncio.Event()

    def _delta(self, key_id: str, now: float) -> UsageDelta:
        if now >= self._day_ends:
            self._next_day(now)
        delta = self._pending.get(key_id)
        if delta is None:
            delta = self._pending[key_id] = UsageDelta()
        return delta

    def _next_day(self, now: float) -> None:
        day, batch = self._day, self._pending
        self._pending = {}
        self._day, self._day_ends = utc_day(now)
        if batch:
            self._merge(day, batch)  # among the earlier days, to be written with its own

    def _merge(self, day: str, batch: dict[str, UsageDelta]) -> None:
        """Put an unwritten batch back, with its day's."""
        into = self._pending if day == self._day else self._earlier.setdefault(day, {})
        for key_id, delta in batch.items():
            kept = into.get(key_id)
            if kept is None:
                into[key_id] = delta
            else:
                kept.merge(delta)

    def forwarded(self, key_id: str) -> None:
        now = self._clock()
        delta = self._delta(key_id, now)
        delta.requests += 1
        delta.last_used_at = now

    def rate_limited(self, key_id: str) -> None:
        now = self._clock()
        delta = self._delta(key_id, now)
        delta.rate_limited += 1
        delta.last_used_at = now

    def charge(self, key_id: str, credits: int) -> None:
        self._delta(key_id, self._clock()).credits += credits

    def refused_credits(self, key_id: str) -> None:
        """A request refused because its user's credits could not pay for it (402)."""
        now = self._clock()
        delta = self._delta(key_id, now)
        delta.refused_credits += 1
        delta.last_used_at = now

    async def flush(self) -> None:
        """Write what is pending, the credits spent and the windows charged since the last flush;
        on failure keep what was not written for the next flush, and raise."""
        await self._flush_usage()
        if self._wallet is not None:
            await self._wallet.flush()
        if self._windows is not None:
            windows = self._windows.take_changed()
            if windows:
                try:
                    await self._store.save_windows(windows, self._clock())
                except BaseException:
                    self._windows.put_back(windows)
                    raise

    async def _flush_usage(self) -> None:
        now = self._clock()
        if now >= self._day_ends:
            self._next_day(now)  # a quiet midnight still closes the day
        batches = sorted(self._earlier.items())
        self._earlier = {}
        if self._pending:
            batches.append((self._day, self._pending))
            self._pending = {}
        started = time.perf_counter()
        for i, (day, batch) in enumerate(batches):
            try:
                await self._store.add_usage(batch, day)
            except BaseException:
                for unwritten_day, unwritten in batches[i:]:
                    self._merge(unwritten_day, unwritten)
                if self._metrics is not None:
                    self._metrics.usage_flush_failures.inc()
                raise
        if batches and self._metrics is not None:
            self._metrics.usage_flush.observe(time.perf_counter() - started)
        kept_since = utc_day(now - self._history_days * 86400)[0]
        if kept_since != self._kept_since:  # once a day (and at the first flush)
            await self._store.drop_usage_before(kept_since)
            self._kept_since = kept_since

    async def run(self, interval: float) -> None:
        """Flush every ``interval`` seconds until ``stop()``, then once more.

        Never cancelled mid-write: a write cut off between its commit and its return would be
        merged back and counted twice.
        """
        failing = False  # logged once per outage, not once per interval
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
            try:
                await self.flush()
            except Exception as exc:
                final = self._stopping.is_set()
                if final or not failing:
                    logger.error("could not write usage to the store%s: %s", "" if final else ", will retry", exc)
                failing = True
            else:
                if failing:
                    logger.warning("usage written to the store again")
                failing = False

    def stop(self) -> None:
        self._stopping.set()
