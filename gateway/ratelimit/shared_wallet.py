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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._local = local  # reads balances from the store, keeps and writes what is spent
        self._refill = refill
        self._fail_open = fail_open
        self._clock = clock
        self._left: dict[str, int] = {}  # each user's balance left, as Redis last said
        self._releases: set[asyncio.Task[None]] = set()

    async def reserve(self, user_id: str, cost: int) -> int | None:
        """Hold ``cost`` credits in Redis (one script: exact across replicas); the reservation's
        generation, or None when the balance cannot pay."""
        period = refill_period(self._refill, self._clock())[0] if self._refill is not None else _NO_REFILL
        try:
            answer = await self._state.reserve_credits(user_id, cost, period)
            if answer[0] == -1:  # first use, a store change, a new period, or a Redis restart
                balance = await self._local.stored_balance(user_id)
                await self._state.start_credits(user_id, balance, period)
                answer = await self._state.reserve_credits(user_id, cost, period)
        except Exception as exc:
            if not is_redis_failure(exc):
                raise
            if not self._fail_open:
                raise StoreUnavailable("Redis cannot be used and redis.on_failure is closed", retry_after=1) from None
            # redis.on_failure: open: this process's own wallet until Redis answers again.
            return _LOCAL if await self._local.reserve(user_id, cost) is not None else None
        self._left[user_id] = answer[1] if len(answer) > 1 else 0
        return answer[2] if answer[0] == 1 else None

    def commit(self, user_id: str, cost: int, token: int = 0) -> None:
        if token == _LOCAL:
            self._local.commit(user_id, cost)
        else:
            self._local.record_spent(user_id, cost)  # taken off the stored balance at the next flush

    def release(self, user_id: str, cost: int, token: int = 0) -> None:
        if token == _LOCAL:
            self._local.release(user_id, cost)
            return
        self._left[user_id] = self._left.get(user_id, 0) + cost
        task = asyncio.ensure_future(self._release(user_id, cost, token))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, user_id: str, cost: int, generation: int) -> None:
        try:
            await self._state.release_credits(user_id, cost, generation)
        except Exception as exc:
            if not is_redis_failure(exc):
                raise
            # The user is short of these credits until its balance is next read from the store.
            logger.warning("could not give %d credits back in Redis (%s: %s)", cost, type(exc).__name__, exc)

    def available(self, user_id: str) -> int:
        left = self._left.get(user_id)
        return self._local.available(user_id) if left is None else left

    async def aclose(self) -> None:
        """Let the releases under way finish (before Redis is closed)."""
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
