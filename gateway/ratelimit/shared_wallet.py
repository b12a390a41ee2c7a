"""The credit wallet shared by every worker and replica through Redis (``credits.wallet`` with
``redis.url``).

The design notes: docs/internals.md, "gateway/ratelimit/shared_wallet.py"."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.accounting.wallet import Wallet, refill_period
from gateway.config import CreditRefill
from gateway.errors import StoreUnavailable
from gateway.ratelimit.redis_state import RedisState, is_redis_failure

__all__ = ["SharedWallet"]

logger = logging.getLogger("gateway.error")

# The token of a reservation held in this process's own wallet (Redis could not be used).
_LOCAL = -1
_NO_REFILL = "-"


class SharedWallet:
    def __init__(
        self,
        state: RedisState,
        local: Wallet,
        *,
        refill: CreditRefill | None,
        fail_open: bool,
        degraded: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._local = local  # reads balances from the store, keeps and writes what is spent
        self._refill = refill
        self._fail_open = fail_open
        self._degraded = degraded  # Redis is known not to answer (the limiter probes it)
        self._clock = clock
        self._left: dict[str, int] = {}  # each user's balance left, as Redis last said
        # Each balance generation's set tag, for the reservations made from it (a few: a new one
        # comes with a read or a set of a balance).
        self._set_at: dict[int, float] = {}
        # Users who spent from this process's own wallet while Redis could not be used: their
        # balance in Redis does not know of it, and is read again from the store (which will).
        self._spent_apart: set[str] = set()
        # Releases Redis did not take: given back once it answers again.
        self._unreleased: list[tuple[str, int, int]] = []
        self._releases: set[asyncio.Task[None]] = set()

    async def reserve(self, user_id: str, cost: int) -> int | None:
        """Hold ``cost`` credits in Redis (one script: exact across replicas); the reservation's
        generation, or None when the balance cannot pay."""
        if self._degraded():
            return await self._reserve_apart(user_id, cost)
        period = refill_period(self._refill, self._clock())[0] if self._refill is not None else _NO_REFILL
        try:
            if user_id in self._spent_apart:
                await self._state.forget_credits(user_id)
                self._spent_apart.discard(user_id)
            answer = await self._state.reserve_credits(user_id, cost, period)
            if answer[0] == -1:  # first use, a new period, a Redis restart, or `credits --add 0`
                balance, set_at = await self._local.stored_balance(user_id)
                await self._state.start_credits(user_id, balance, period, set_at)
                answer = await self._state.reserve_credits(user_id, cost, period)
        except Exception as exc:
            if not is_redis_failure(exc):
                raise
            return await self._reserve_apart(user_id, cost)
        if self._unreleased:
            self._retry_releases()
        outcome, left, generation, set_at = answer
        self._left[user_id] = left
        if outcome != 1:
            return None
        if generation not in self._set_at:
            if len(self._set_at) > 1000:  # bounded: a lost tag costs only a set's precision
                self._set_at.clear()
            self._set_at[generation] = set_at
        self._local.hold(user_id, cost)
        return generation

    async def _reserve_apart(self, user_id: str, cost: int) -> int | None:
        """Redis cannot be used: refused (redis.on_failure: closed), or paid from this process's
        own wallet until Redis answers again (open)."""
        if not self._fail_open:
            raise StoreUnavailable("Redis cannot be used and redis.on_failure is closed", retry_after=1)
        if await self._local.reserve(user_id, cost) is None:
            return None
        self._spent_apart.add(user_id)
        return _LOCAL

    def commit(self, user_id: str, cost: int, token: int = 0) -> None:
        if token == _LOCAL:
            self._local.commit(user_id, cost)
        else:
            self._local.release(user_id, cost)  # no longer in flight: spent
            # Taken off the stored balance at the next flush, unless a set came after its own.
            self._local.record_spent(user_id, cost, self._set_at.get(token))

    def release(self, user_id: str, cost: int, token: int = 0) -> None:
        self._local.release(user_id, cost)
        if token == _LOCAL:
            return
        self._left[user_id] = self._left.get(user_id, 0) + cost
        self._release_later(user_id, cost, token)

    def _release_later(self, user_id: str, cost: int, generation: int) -> None:
        task = asyncio.ensure_future(self._release(user_id, cost, generation))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, user_id: str, cost: int, generation: int) -> None:
        try:
            await self._state.release_credits(user_id, cost, generation)
        except Exception as exc:
            if not is_redis_failure(exc):
                raise
            logger.warning(
                "could not give %d credits back in Redis (%s: %s); will once it answers", cost, type(exc).__name__, exc
            )
            if len(self._unreleased) < 100_000:  # bounded: past it, the user waits for a new read
                self._unreleased.append((user_id, cost, generation))

    def _retry_releases(self) -> None:
        pending, self._unreleased = self._unreleased, []
        for user_id, cost, generation in pending:
            self._release_later(user_id, cost, generation)

    def available(self, user_id: str) -> int:
        left = self._left.get(user_id)
        return self._local.available(user_id) if left is None else left

    async def aclose(self) -> None:
        """Let the releases under way finish (before Redis is closed)."""
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
