"""The credit wallet in process, on a real SQLite store, with a clock that moves only when told."""

from __future__ import annotations

import asyncio
import calendar

from gateway.accounting.wallet import Wallet, refill_period
from gateway.config import CreditRefill
from gateway.manage.service import ManagementService
from gateway.store import KeyStore
from tests.fakes import Clock

MONTHLY = CreditRefill(amount=1000, every="month")


async def user_with(store: KeyStore, balance: int, clock: Clock | None = None) -> ManagementService:
    service = ManagementService(store, key_prefix="mk_live_", clock=clock or Clock(1_000.0))
    await service.add_user("alice")
    await service.credits("alice", set_to=balance)
    return service


async def test_reservations_forward_exactly_what_the_balance_pays_for(store: KeyStore) -> None:
    service = await user_with(store, 50)
    wallet = Wallet(store)
    tokens = await asyncio.gather(*(wallet.reserve("alice", 1) for _ in range(200)))
    assert sum(token is not None for token in tokens) == 50 and wallet.available("alice") == 0
    for _ in range(10):
        wallet.release("alice", 1)  # not 2xx: given back
    for _ in range(40):
        wallet.commit("alice", 1)
    assert wallet.available("alice") == 10
    await wallet.flush()
    assert await service.credits("alice") == 10  # the 40 spent are off the stored balance
    assert wallet.available("alice") == 10  # and counted once, not twice


async def test_an_operators_change_counts_at_the_next_request(store: KeyStore) -> None:
    service = await user_with(store, 1)
    wallet = Wallet(store)
    assert await wallet.reserve("alice", 1) is not None
    wallet.commit("alice", 1)
    assert await wallet.reserve("alice", 1) is None
    await service.credits("alice", add=5)  # another process's write: the change counter moves
    assert await wallet.reserve("alice", 5) is not None  # 1 + 5 stored, 1 spent but not yet written
    assert await wallet.reserve("alice", 1) is None


async def test_an_operators_set_balance_stands_whatever_was_spent_before_it(store: KeyStore) -> None:
    clock = Clock(1_000.0)
    service = await user_with(store, 100, clock)  # the operator's clock and the gateway's agree
    wallet = Wallet(store, clock=clock)
    for _ in range(30):
        assert await wallet.reserve("alice", 1) is not None
        wallet.commit("alice", 1)  # spent, not yet written
    clock.tick(1)
    await service.credits("alice", set_to=10)  # the operator says: 10, from now on
    clock.tick(1)
    assert await wallet.reserve("alice", 1) is not None
    wallet.commit("alice", 1)  # spent after the set: taken off it
    await wallet.flush()
    assert await service.credits("alice") == 9  # not 10 - 31 = -21
    assert wallet.available("alice") == 9


async def test_an_operators_top_up_adds_to_what_is_left(store: KeyStore) -> None:
    service = await user_with(store, 100)
    wallet = Wallet(store)
    for _ in range(30):
        assert await wallet.reserve("alice", 1) is not None
        wallet.commit("alice", 1)
    await service.credits("alice", add=5)
    await wallet.flush()
    assert await service.credits("alice") == 75


async def test_a_refill_at_the_month_boundary(store: KeyStore) -> None:
    service = await user_with(store, 0)
    december = calendar.timegm((2026, 12, 31, 23, 59, 0, 0, 0, 0))
    clock = Clock(float(december))
    wallet = Wallet(store, refill=MONTHLY, clock=clock)
    assert await wallet.reserve("alice", 999) is not None  # December's refill, applied at the first request
    wallet.commit("alice", 999)
    await wallet.flush()
    assert await service.credits("alice") == 1
    assert await wallet.reserve("alice", 2) is None
    clock.tick(60)  # 2027-01-01T00:00:00Z
    assert await wallet.reserve("alice", 1000) is not None  # raised to 1,000 again, once
    wallet.commit("alice", 1000)
    await wallet.flush()
    assert await service.credits("alice") == 0
    assert await Wallet(store, refill=MONTHLY, clock=clock).reserve("alice", 1) is None  # not twice in January


def test_refill_periods() -> None:
    assert refill_period(MONTHLY, calendar.timegm((2026, 12, 6, 21, 0, 0, 0, 0, 0))) == (
        "2026-12",
        float(calendar.timegm((2027, 1, 1, 0, 0, 0, 0, 0, 0))),
    )
    daily = CreditRefill(amount=5, every="day")
    assert refill_period(daily, calendar.timegm((2026, 2, 28, 12, 0, 0, 0, 0, 0)))[0] == "2026-02-28"


async def test_what_the_last_period_spent_unwritten_is_not_taken_off_the_refill(store: KeyStore) -> None:
    clock = Clock(calendar.timegm((2026, 12, 31, 23, 59, 59, 0, 0, 0)))
    await user_with(store, 10, clock)
    wallet = Wallet(store, refill=CreditRefill(amount=10, every="day"), clock=clock)
    for token in await asyncio.gather(*(wallet.reserve("alice", 1) for _ in range(10))):
        assert token is not None
        wallet.commit("alice", 1, token)  # spent in the old day, not written yet
    clock.tick(2)  # a new day: refilled to 10
    tokens = await asyncio.gather(*(wallet.reserve("alice", 1) for _ in range(12)))
    assert sum(token is not None for token in tokens) == 10
