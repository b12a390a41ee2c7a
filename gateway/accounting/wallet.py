"""The credit wallet (``credits.wallet``): each user's balance pays for costed requests, counted in
this process's memory and written to the store behind, as usage is.

A costed request reserves its cost before it is forwarded (or is refused, 402, when the balance
left after what is spent and reserved cannot pay); the reservation is committed when the answer
is a 2xx (or the client left once the request was upstream: the work may be done), and released
otherwise. The test and the reservation are one synchronous step, so N concurrent requests
against a balance of B at cost 1 forward exactly B of them.

A user's balance is read from the store at its first costed request, and again after any change
in the store (an operator's ``users credits``, seen through the change counter) or at a new refill
period; on every other request the wallet does no I/O. Spent credits wait in memory and are taken
off the stored balance, recorded, with each usage flush; a failed write keeps them for the next.
"""

from __future__ import annotations

import asyncio
import calendar
import time
from collections.abc import Callable
from typing import Protocol

from gateway.config import CreditRefill
from gateway.store import KeyStore

__all__ = ["CreditWallet", "Wallet", "refill_period"]


class CreditWallet(Protocol):
    """What the proxy needs of a wallet: this process's (``Wallet``), or one shared through Redis."""

    async def reserve(self, user_id: str, cost: int) -> int | None: ...

    def commit(self, user_id: str, cost: int, token: int = 0) -> None: ...

    def release(self, user_id: str, cost: int, token: int = 0) -> None: ...

    def available(self, user_id: str) -> int: ...


def refill_period(refill: CreditRefill, now: float) -> tuple[str, float]:
    """The refill period ``now`` is in ('2026-12' for a month, '2026-12-06' for a day), and when it ends (UTC)."""
    day = time.gmtime(now)
    if refill.every == "day":
        start = now - now % 86400
        return time.strftime("%Y-%m-%d", day), start + 86400
    year, month = (day.tm_year + 1, 1) if day.tm_mon == 12 else (day.tm_year, day.tm_mon + 1)
    return time.strftime("%Y-%m", day), float(calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0)))


class Wallet:
    def __init__(
        self, store: KeyStore, *, refill: CreditRefill | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._refill = refill
        self._clock = clock
        self._known: dict[str, int] = {}  # balances as the store last said
        self._spent: dict[str, int] = {}  # committed, not yet written
        self._writing: dict[str, int] = {}  # being written
        self._reserved: dict[str, int] = {}  # requests in flight
        # Loads and writes of balances one at a time: a balance read while spent credits are
        # being written would count them twice, or not at all.
        self._lock = asyncio.Lock()
        self._changes = store.changes()
        self._period_ends = refill_period(refill, clock())[1] if refill is not None else float("inf")

    def available(self, user_id: str) -> int:
        """What the user can spend now (0 for a balance not read yet)."""
        return (
            self._known.get(user_id, 0)
            - self._spent.get(user_id, 0)
            - self._writing.get(user_id, 0)
            - self._reserved.get(user_id, 0)
        )

    async def reserve(self, user_id: str, cost: int) -> int | None:
        """Hold ``cost`` credits for a request about to be forwarded: a token for ``commit`` or
        ``release``, or None when the balance cannot pay."""
        if user_id not in self._known or self._stale():
            await self._load(user_id)
        # From here to the reservation nothing awaits: the test and the hold are one step.
        if self.available(user_id) < cost:
            return None
        self._reserved[user_id] = self._reserved.get(user_id, 0) + cost
        return 0

    def commit(self, user_id: str, cost: int, token: int = 0) -> None:
        """The reserved request was paid for (a 2xx, or the upstream had it when its client left)."""
        self._unreserve(user_id, cost)
        self.record_spent(user_id, cost)

    def release(self, user_id: str, cost: int, token: int = 0) -> None:
        """The reserved request was not paid for."""
        self._unreserve(user_id, cost)

    def record_spent(self, user_id: str, cost: int) -> None:
        """Credits spent, to be taken off the stored balance at the next flush."""
        self._spent[user_id] = self._spent.get(user_id, 0) + cost

    async def stored_balance(self, user_id: str) -> int:
        """The stored balance (refilled if a period began) less what this process spent and has
        not written yet: where a balance shared through Redis starts."""
        if user_id not in self._known or self._stale():
            await self._load(user_id)
        return self._known[user_id] - self._spent.get(user_id, 0) - self._writing.get(user_id, 0)

    def _stale(self) -> bool:
        if self._store.changes() != self._changes or self._clock() >= self._period_ends:
            self._forget()
            return True
        return False

    def _unreserve(self, user_id: str, cost: int) -> None:
        left = self._reserved[user_id] - cost
        if left:
            self._reserved[user_id] = left
        else:
            del self._reserved[user_id]

    def _forget(self) -> None:
        """Read every balance again at its next request (the store changed, or a period began)."""
        self._changes = self._store.changes()
        if self._refill is not None:
            self._period_ends = refill_period(self._refill, self._clock())[1]
        self._known.clear()

    async def _load(self, user_id: str) -> None:
        async with self._lock:
            if user_id in self._known:  # another request read it meanwhile
                return
            now = self._clock()
            if self._refill is not None:
                period = refill_period(self._refill, now)[0]
                found = await self._store.credit_balance(user_id)
                if found is not None and found[1] != period:
                    await self._store.refill_credits(user_id, amount=self._refill.amount, period=period, at=now)
            found = await self._store.credit_balance(user_id)
            self._known[user_id] = 0 if found is None else found[0]

    async def flush(self) -> None:
        """Take the credits spent since the last flush off the stored balances, recorded; on
        failure keep them for the next flush, and raise."""
        if not self._spent:
            return
        async with self._lock:
            batch, self._spent = self._spent, {}
            self._writing = batch
            try:
                await self._store.spend_credits(batch, self._clock())
            except BaseException:
                for user_id, spent in batch.items():
                    self._spent[user_id] = self._spent.get(user_id, 0) + spent
                raise
            finally:
                self._writing = {}
            # Balances read before this write do not include it yet (none is read meanwhile).
            for user_id, spent in batch.items():
                if user_id in self._known:
                    self._known[user_id] -= spent
