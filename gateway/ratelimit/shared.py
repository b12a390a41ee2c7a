"""Rate limits shared by every worker and replica through Redis, and what happens when Redis fails.

The design notes: docs/internals.md, "gateway/ratelimit/shared.py"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from gateway.accounting.metrics import Metrics
from gateway.auth.verify import Verifier
from gateway.errors import StoreUnavailable
from gateway.ratelimit.limiter import Charge, Decision, Limiter
from gateway.ratelimit.redis_state import RedisState, is_redis_failure
from gateway.units import Limits

__all__ = ["SharedLimiter"]

logger = logging.getLogger("gateway.error")

PROBE_INTERVAL = 1.0


class SharedLimiter:
    def __init__(
        self,
        state: RedisState,
        fallback: Limiter,
        verifier: Verifier,
        *,
        fail_open: bool,
        metrics: Metrics | None = None,
    ) -> None:
        self.state = state
        self.fallback = fallback
        self._verifier = verifier
        self._fail_open = fail_open
        self._metrics = metrics
        self._probe: asyncio.Task[None] | None = None

    @property
    def degraded(self) -> bool:
        return self._probe is not None

    async def hit(self, key_id: str, limits: Limits) -> tuple[Decision, bytes | None]:
        """The decision, and the epoch (None when it came from memory). Raises StoreUnavailable
        when Redis cannot be used and ``redis.on_failure`` is ``closed``."""
        return await self._decide(lambda: self.state.hit(key_id, limits), lambda: self.fallback.hit(key_id, limits))

    async def hit_all(self, charges: tuple[Charge, ...]) -> tuple[Decision, bytes | None]:
        """As ``hit``, for a request charged to several owners (its key and its user)."""
        return await self._decide(lambda: self.state.hit_all(charges), lambda: self.fallback.hit_all(charges))

    async def _decide(
        self, in_redis: Callable[[], Awaitable[tuple[Decision, bytes]]], in_memory: Callable[[], Decision]
    ) -> tuple[Decision, bytes | None]:
        if self._probe is None:
            try:
                return await in_redis()
            except Exception as exc:
                if not is_redis_failure(exc):
                    raise
                self._degrade(exc)
        if not self._fail_open:
            raise StoreUnavailable("Redis cannot be used and redis.on_failure is closed", retry_after=1)
        return in_memory(), None

    def _degrade(self, exc: BaseException) -> None:
        if self._probe is not None:  # another request that was waiting on Redis saw it first
            return
        logger.warning(
            "Redis cannot be used (%s: %s); %s until it answers",
            type(exc).__name__,
            exc,
            f"limits are counted per process and cached keys are checked again every {self._verifier.degraded_ttl:g} s"
            if self._fail_open
            else "requests get 503 (redis.on_failure: closed)",
        )
        self._verifier.set_degraded(True)
        if self._metrics is not None:
            self._metrics.redis_degraded.set(1)
            self._metrics.redis_failures.inc()
        self._probe = asyncio.create_task(self._wait_for_redis())

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                await self.state.ping()
            except Exception as exc:
                if not is_redis_failure(exc):
                    raise
                continue
            break
        self._probe = None
        # Writes made meanwhile could not be announced: start from the store again.
        self._verifier.set_degraded(False)
        if self._metrics is not None:
            self._metrics.redis_degraded.set(0)
        logger.warning("Redis answers again; limits are shared again")

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self.state.aclose()
