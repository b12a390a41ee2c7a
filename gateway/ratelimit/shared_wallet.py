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
# Reads of a balance in a row that a change may overtake before the request gives up (503).
_LOAD_ATTEMPTS = 3
# Set tags kept, by generation, for the reservations in flight.
_TAGS_KEPT = 10_000


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
        # Each balance generation's set tag, for the reservations made from it (a generation is
        # new with each read or set of a balance, and never reused).
        self._set_at: dict[int, float] = {}
        # Users whose balance in Redis is wrong until read again from the store, which is right:
        # they spent from this process's own wallet while Redis could not be used, or a release
        # did not reach it. Read again at the first call Redis answers, for all of them at once.
        self._read_again: set[str] = set()
        # Users whose balance this process read from the store during the current outage (the
        # one it held from before is stale: other replicas spent meanwhile and wrote it).
        self._read_apart: set[str] = set()
        self._releases: set[asyncio.Task[None]] = set()

    async def reserve(self, user_id: str, cost: int) -> int | None:
        """Hold ``cost`` credits in Redis (one script: exact across replicas); the reservation's
        generation, or None when the balance cannot pay."""
        if self._degraded():
            return await self._reserve_apart(user_id, cost)
        period = refill_period(self._refill, self._clock())[0] if self._refill is not None else _NO_REFILL
        try:
            while self._read_again:
                stale = next(iter(self._read_again))
                await self._state.forget_credits(stale)
                self._read_again.discard(stale)
            for _ in range(_LOAD_ATTEMPTS):
                answer = await self._state.reserve_credits(user_id, cost, period)
                if answer[0] != -1:
                    break
                # First use, a new period, a Redis restart, or a balance to read again. A change
                # made while it is read (its version moved) is not written over: read again.
                balance, set_at = await self._local.stored_balance(user_id)
                await self._state.start_credits(user_id, balance, period, set_at, version=answer[1])
            else:
                raise StoreUnavailable("the credit balance kept changing while it was read", retry_after=1)
        except Exception as exc:
            if not is_redis_failure(exc):
                raise
            return await self._reserve_apart(user_id, cost)
        self._read_apart.clear()  # Redis answers: balances are its again
        outcome, left, generation, set_at = answer
        self._left[user_id] = left
        if outcome != 1:
            return None
        if generation not in self._set_at:
            while len(self._set_at) >= _TAGS_KEPT:  # the oldest first: no reservation is that old
                del self._set_at[next(iter(self._set_at))]
            self._set_at[generation] = set_at
        self._local.hold(user_id, cost)
        return generation

    async def _reserve_apart(self, user_id: str, cost: int) -> int | None:
        """Redis cannot be used: refused (redis.on_failure: closed), or paid from this process's
        own wallet, from the balance read afresh from the store, until Redis answers again (open)."""
        if not self._fail_open:
            raise StoreUnavailable("Redis cannot be used and redis.on_failure is closed", retry_after=1)
        if user_id not in self._read_apart:
            self._local.forget_balance(user_id)
            self._read_apart.add(user_id)
        if await self._local.reserve(user_id, cost) is None:
            return None
        self._read_again.add(user_id)
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
            # Not tried again: Redis may have run it all the same (a late answer), and twice
            # would give the credits back twice. The store is right: the balance is read again.
            logger.warning(
                "could not give %d credits back in Redis (%s: %s); the balance will be read again",
                cost,
                type(exc).__name__,
                exc,
            )
            self._read_again.add(user_id)

    def available(self, user_id: str) -> int:
        left = self._left.get(user_id)
        return self._local.available(user_id) if left is None else left

    async def aclose(self) -> None:
        """Let the releases under way finish (before Redis is closed)."""
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
