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

Spending is tagged with the moment of the operator's last ``--set`` as the store gave it when the
balance was read (0 for none): the flush takes it off only while no later set exists, so a set
stands whatever was spent against the balance before it, with no clock of this host compared to
the operator's.
"""

from __future__ import annotations

import asyncio
import calendar
import time
from collections.abc import Callable
from typing import Protocol

from gateway.config import CreditRefill
from gateway.store import KeyStore
from gateway.units import utc_day

__all__ = ["CreditWallet", "Wallet", "refill_period"]

# Reads of a balance before one is kept though writes keep landing meanwhile (each is rare).
_LOAD_ATTEMPTS = 3


class CreditWallet(Protocol):
    """What the proxy needs of a wallet: this process's (``Wallet``), or one shared through Redis."""

    async def reserve(self, user_id: str, cost: int) -> int | None: ...

    def commit(self, user_id: str, cost: int, token: int = 0) -> None: ...

    def release(self, user_id: str, cost: int, token: int = 0) -> None: ...

    def available(self, user_id: str) -> int: ...


def refill_period(refill: CreditRefill, now: float) -> tuple[str, float]:
    """The refill period ``now`` is in ('2026-12' for a month, '2026-12-06' for a day), and when it ends (UTC)."""
    if refill.every == "day":
        return utc_day(now)
    day = time.gmtime(now)
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
        self._set_at: dict[str, float] = {}  # when each was last set, as the store said (0: never)
        # Spent and not yet written, by user and the set they were spent under (its tag): a later
        # --set drops them.
        self._spent: dict[tuple[str, float], int] = {}
        self._unwritten: dict[str, int] = {}  # the same by user, being written included
        self._reserved: dict[str, int] = {}  # requests in flight
        # Loads and writes of balances one at a time: a balance read while spent credits are
        # being written would count them twice, or not at all.
        self._lock = asyncio.Lock()
        self._changes = store.changes()
        self._period_ends = refill_period(refill, clock())[1] if refill is not None else float("inf")

    def available(self, user_id: str) -> int:
        """What the user can spend now (0 for a balance not read yet)."""
        return self._known.get(user_id, 0) - self._unwritten.get(user_id, 0) - self._reserved.get(user_id, 0)

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

    def forget_balance(self, user_id: str) -> None:
        """Read the user's balance from the store at its next request (what this process holds of
        it may be stale: spending by others, written meanwhile, changes no counter it watches)."""
        self._known.pop(user_id, None)

    def hold(self, user_id: str, cost: int) -> None:
        """Count a reservation made elsewhere (in Redis) as this process's own in flight: a balance
        this process reads meanwhile, or pays from while Redis is out, leaves it aside."""
        self._reserved[user_id] = self._reserved.get(user_id, 0) + cost

    def commit(self, user_id: str, cost: int, token: int = 0) -> None:
        """The reserved request was paid for (a 2xx, or the upstream had it when its client left)."""
        self._unreserve(user_id, cost)
        self.record_spent(user_id, cost)

    def release(self, user_id: str, cost: int, token: int = 0) -> None:
        """The reserved request was not paid for."""
        self._unreserve(user_id, cost)

    def record_spent(self, user_id: str, cost: int, set_at: float | None = None) -> None:
        """Credits spent under the set of ``set_at`` (default: the one this process last read), to
        be taken off the stored balance at the next flush unless an operator sets it since."""
        key = (user_id, self._set_at.get(user_id, 0.0) if set_at is None else set_at)
        self._spent[key] = self._spent.get(key, 0) + cost
        self._unwritten[user_id] = self._unwritten.get(user_id, 0) + cost

    async def stored_balance(self, user_id: str) -> tuple[int, float]:
        """The stored balance, read now (refilled if a period began), less what this process spent
        under its last set and has not written yet or holds for requests in flight, and that set's
        tag: where a balance shared through Redis starts. Read afresh: other replicas' spending
        reaches the store without a change this process would see."""
        self._known.pop(user_id, None)
        await self._load(user_id)
        left = self._known[user_id] - self._unwritten.get(user_id, 0) - self._reserved.get(user_id, 0)
        return left, self._set_at.get(user_id, 0.0)

    def _stale(self) -> bool:
        if self._store.changes() != self._changes or self._clock() >= self._period_ends:
            self._forget()
            return True
        return False

    def _unreserve(self, user_id: str, cost: int) -> None:
        _take(self._reserved, user_id, cost)

    def _forget(self) -> None:
        """Read every balance again at its next request (the store changed, or a period began)."""
        self._changes = self._store.changes()
        if self._refill is not None:
            self._period_ends = refill_period(self._refill, self._clock())[1]
        self._known.clear()

    async def _load(self, user_id: str) -> None:
        async with self._lock:
            for _ in range(_LOAD_ATTEMPTS):
                if user_id in self._known:  # another request read it meanwhile
                    return
                changes = self._store.changes()
                if changes != self._changes:
                    self._forget()
                balance = await self._read(user_id)
                # A write landed while it was read (an operator's --set): the value may be from
                # before it, and would outlive it; read again.
                if self._store.changes() == changes:
                    break
            self._known[user_id] = balance

    async def _read(self, user_id: str) -> int:
        """The stored balance, refilled first if a period began since it last was. Credits spent
        before an operator last set it will not be taken off it: they are forgotten here."""
        now = self._clock()
        if self._refill is not None:
            period = refill_period(self._refill, now)[0]
            found = await self._store.credit_balance(user_id)
            # Only forwards: a replica whose clock lags must not refill an earlier period again.
            if found is not None and (found[1] is None or found[1] < period):
                pending = self._unwritten.get(user_id, 0)
                await self._store.refill_credits(
                    user_id, amount=self._refill.amount, period=period, at=now, pending=pending
                )
        found = await self._store.credit_balance(user_id)
        if found is None:
            return 0
        balance, _, set_at = found
        self._set_at[user_id] = set_at or 0.0
        if set_at is not None:
            for key in [key for key in self._spent if key[0] == user_id and key[1] < set_at]:
                spent = self._spent.pop(key)
                _take(self._unwritten, user_id, spent)
        return balance

    async def flush(self) -> None:
        """Take the credits spent since the last flush off the stored balances, recorded; on
        failure keep them for the next flush, and raise."""
        if not self._spent:
            return
        async with self._lock:
            batch, self._spent = self._spent, {}
            rows = [(user_id, since, spent) for (user_id, since), spent in batch.items()]
            try:
                taken = await self._store.spend_credits(rows, self._clock())
            except BaseException:
                for key, spent in batch.items():
                    self._spent[key] = self._spent.get(key, 0) + spent
                raise
            for (user_id, _, spent), was_taken in zip(rows, taken, strict=True):
                _take(self._unwritten, user_id, spent)
                # Balances read before this write do not include it yet (none is read meanwhile).
                if was_taken and user_id in self._known:
                    self._known[user_id] -= spent


def _take(counts: dict[str, int], user_id: str, amount: int) -> None:
    """Take ``amount`` off a user's count, forgetting the user at zero (the dicts stay as small as
    the number of users with something in them)."""
    left = counts[user_id] - amount
    if left:
        counts[user_id] = left
    else:
        del counts[user_id]
