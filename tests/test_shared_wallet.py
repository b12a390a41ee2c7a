"""The wallet shared through Redis, in process: two replicas' wallets on one real store and the
machine's Redis, an operator's changes through the service, and clocks that move only when told."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.accounting.wallet import Wallet
from gateway.config import CreditRefill
from gateway.manage.service import ManagementService
from gateway.ratelimit.redis_state import RedisState
from gateway.ratelimit.shared_wallet import SharedWallet
from gateway.store import KeyStore
from tests.fakes import Clock
from tests.services import machine_redis_url

DAILY = CreditRefill(amount=100, every="day")


@pytest.fixture
async def state() -> AsyncIterator[RedisState]:
    opened = RedisState(machine_redis_url(), timeout=2)
    yield opened
    await opened.aclose()


def replica(
    store: KeyStore,
    state: RedisState,
    clock: Clock,
    refill: CreditRefill | None = None,
    degraded: Callable[[], bool] = lambda: False,
) -> SharedWallet:
    wallet = Wallet(store, refill=refill, clock=clock)
    return SharedWallet(state, wallet, refill=refill, fail_open=True, degraded=degraded, clock=clock)


async def operator(store: KeyStore, state: RedisState, clock: Clock, balance: int) -> tuple[ManagementService, str]:
    service = ManagementService(store, key_prefix="mk_live_", clock=clock, change_credits=state.change_credits)
    user = f"u-{uuid.uuid4().hex[:8]}"
    await service.add_user(user)
    await service.credits(user, set_to=balance)
    return service, user


async def reserve_all(wallet: SharedWallet, user: str, count: int) -> list[int]:
    tokens = await asyncio.gather(*(wallet.reserve(user, 1) for _ in range(count)))
    return [token for token in tokens if token is not None]


async def test_an_operators_top_up_leaves_the_reservations_in_flight_counted(
    store: KeyStore, state: RedisState, clock: Clock
) -> None:
    service, user = await operator(store, state, clock, 10)
    one, two = replica(store, state, clock), replica(store, state, clock)
    in_flight = await reserve_all(one, user, 40)
    assert len(in_flight) == 10
    await service.credits(user, add=1)  # while the ten are upstream
    more = await reserve_all(two, user, 40)
    assert len(more) == 1  # the top-up, not the ten again
    for token in in_flight:
        one.commit(user, 1, token)
    two.commit(user, 1, more[0])
    await one._local.flush()
    await two._local.flush()
    assert await service.credits(user) == 0


async def test_a_balance_read_again_counts_what_other_replicas_wrote(
    store: KeyStore, state: RedisState, clock: Clock
) -> None:
    service, user = await operator(store, state, clock, 100)
    one, two = replica(store, state, clock), replica(store, state, clock)
    for wallet, count in ((one, 10), (two, 80)):
        for token in await reserve_all(wallet, user, count):
            wallet.commit(user, 1, token)
        await wallet._local.flush()
    assert await service.credits(user) == 10
    await state.forget_credits(user)  # as a Redis restart loses it
    assert len(await reserve_all(one, user, 200)) == 10


async def test_a_set_stands_whatever_was_reserved_before_it(store: KeyStore, state: RedisState, clock: Clock) -> None:
    service, user = await operator(store, state, clock, 50)
    wallet = replica(store, state, clock)
    before = await reserve_all(wallet, user, 5)
    clock.tick(1)
    await service.credits(user, set_to=20)
    after = await reserve_all(wallet, user, 3)
    for token in before + after:
        wallet.commit(user, 1, token)
    await wallet._local.flush()
    # The five reserved before the set are not taken off the balance it set; the three after are.
    assert await service.credits(user) == 17
    assert len(await reserve_all(wallet, user, 30)) == 17  # and Redis holds the same


async def test_a_replica_whose_clock_lags_neither_refills_again_nor_refuses(
    store: KeyStore, state: RedisState, clock: Clock
) -> None:
    clock.now = 1_700_006_400.0 - 0.2  # 0.2 s before a UTC midnight
    service, user = await operator(store, state, clock, 0)
    ahead = Clock(clock.now + 0.5)  # past midnight already
    early, late = replica(store, state, ahead, DAILY), replica(store, state, clock, DAILY)
    assert len(await reserve_all(early, user, 150)) == 100  # the new day's refill
    # The lagging replica still sees the day before: it spends the same, newer balance (empty).
    assert await reserve_all(late, user, 10) == []
    clock.tick(0.5)  # its midnight comes: no second refill
    assert await reserve_all(late, user, 10) == []
    found = await store.credit_balance(user)
    assert found is not None and found[0] == 100


async def test_what_was_spent_while_redis_was_out_is_not_spent_again(
    store: KeyStore, state: RedisState, clock: Clock
) -> None:
    service, user = await operator(store, state, clock, 10)
    out = True
    wallet = replica(store, state, clock, degraded=lambda: out)
    assert len(await reserve_all(wallet, user, 1)) == 1
    out = False
    assert len(await reserve_all(wallet, user, 1)) == 1  # Redis holds 10 - 1 = 9 from here
    out = True
    # This process's own wallet: the 10 read, less the two reservations still in flight.
    spent_apart = await reserve_all(wallet, user, 20)
    assert len(spent_apart) == 8
    for token in spent_apart:
        wallet.commit(user, 1, token)
    out = False
    # Redis comes back holding 9: the balance is read again from the store, less what was spent
    # and what is in flight: ten forwarded in all.
    assert await reserve_all(wallet, user, 20) == []


async def test_a_change_made_while_a_balance_is_read_is_not_written_over(
    store: KeyStore, state: RedisState, clock: Clock
) -> None:
    service, user = await operator(store, state, clock, 10)
    wallet = replica(store, state, clock)
    outcome, version, _, _ = await state.reserve_credits(user, 1, "-")
    assert outcome == -1  # not in Redis yet: this replica reads it from the store...
    balance, set_at = await wallet._local.stored_balance(user)
    clock.tick(1)
    await service.credits(user, set_to=0)  # ...and the operator's set lands meanwhile
    assert not await state.start_credits(user, balance, "-", set_at, version=version)
    assert await reserve_all(wallet, user, 5) == []  # the set counts


async def test_generations_are_never_reused_when_redis_loses_its_counter(
    store: KeyStore, state: RedisState, clock: Clock
) -> None:
    _, user = await operator(store, state, clock, 10)
    wallet = replica(store, state, clock)
    (first,) = await reserve_all(wallet, user, 1)
    await state.client.delete("gateway-wallet-generation")
    await state.forget_credits(user)  # as a Redis restart loses both
    (second,) = await reserve_all(wallet, user, 1)
    assert second > first
    wallet.release(user, 1, first)  # given back to the balance it came from, not to this one
    await asyncio.gather(*wallet._releases)
    assert len(await reserve_all(wallet, user, 20)) == 8  # 10 - the one in flight - the first one


async def test_while_redis_is_out_a_replica_pays_from_the_stored_balance_read_afresh(
    store: KeyStore, state: RedisState, clock: Clock
) -> None:
    service, user = await operator(store, state, clock, 100)
    out = False
    one = replica(store, state, clock, degraded=lambda: out)
    two = replica(store, state, clock)
    for token in await reserve_all(one, user, 1):
        one.commit(user, 1, token)
    for token in await reserve_all(two, user, 79):
        two.commit(user, 1, token)
    await one._local.flush()
    await two._local.flush()
    assert await service.credits(user) == 20
    out = True
    apart = await reserve_all(one, user, 100)
    assert len(apart) == 20  # not the 99 this process last knew of
    for token in apart:
        one.commit(user, 1, token)
    await one._local.flush()
    out = False
    _, other = await operator(store, state, clock, 1)
    assert len(await reserve_all(one, other, 1)) == 1  # Redis answers: the stale balance goes
    assert await reserve_all(two, user, 10) == []  # every replica reads it again: none left
