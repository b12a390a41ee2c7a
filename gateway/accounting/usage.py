"""Usage per key, counted in memory on the hot path and written to the store in the background.

The design notes: docs/internals.md, "gateway/accounting/usage.py"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from gateway.accounting.metrics import Metrics
from gateway.config import CreditRule
from gateway.store import KeyStore, UsageDelta, WindowCount

__all__ = ["CreditRules", "UsageRecorder", "WindowSource", "normalized_path"]

logger = logging.getLogger("gateway.error")


def normalized_path(path: str) -> str:
    """``path`` with dot segments resolved and repeated slashes collapsed; a trailing slash kept."""
    if "/." not in path and "//" not in path:
        return path
    resolved = posixpath.normpath(path)
    if resolved.startswith("//"):  # normpath keeps exactly two leading slashes (POSIX)
        resolved = "/" + resolved.lstrip("/")
    if path.endswith("/") and resolved != "/":
        resolved += "/"
    return resolved


class CreditRules:
    def __init__(self, rules: tuple[CreditRule, ...]) -> None:
        self._rules = rules

    def cost(self, method: str, path: str) -> int:
        """The first matching rule's cost, or 0."""
        if not self._rules:
            return 0
        path = normalized_path(path)
        for rule in self._rules:
            if rule.method != "*" and rule.method != method:
                continue
            if rule.path.endswith("*"):
                if path.startswith(rule.path[:-1]):
                    return rule.cost
            elif path == rule.path:
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
    ) -> None:
        self._store = store
        self._windows = windows
        self._metrics = metrics
        self._clock = clock
        self._pending: dict[str, UsageDelta] = {}
        self._stopping = asyncio.Event()

    def _delta(self, key_id: str) -> UsageDelta:
        delta = self._pending.get(key_id)
        if delta is None:
            delta = self._pending[key_id] = UsageDelta()
        return delta

    def forwarded(self, key_id: str) -> None:
        delta = self._delta(key_id)
        delta.requests += 1
        delta.last_used_at = self._clock()

    def rate_limited(self, key_id: str) -> None:
        delta = self._delta(key_id)
        delta.rate_limited += 1
        delta.last_used_at = self._clock()

    def charge(self, key_id: str, credits: int) -> None:
        self._delta(key_id).credits += credits

    async def flush(self) -> None:
        """Write what is pending, then the windows charged since the last flush; on failure keep
        what was not written for the next flush, and raise."""
        await self._flush_usage()
        if self._windows is not None:
            windows = self._windows.take_changed()
            if windows:
                try:
                    await self._store.save_windows(windows, self._clock())
                except BaseException:
                    self._windows.put_back(windows)
                    raise

    async def _flush_usage(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        started = time.perf_counter()
        try:
            await self._store.add_usage(batch)
        except BaseException:
            for key_id, delta in batch.items():
                self._delta(key_id).merge(delta)
            if self._metrics is not None:
                self._metrics.usage_flush_failures.inc()
            raise
        if self._metrics is not None:
            self._metrics.usage_flush.observe(time.perf_counter() - started)

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
