"""What a verifier trusts while its store cannot be read, on the machine's PostgreSQL reached
through a fault proxy the test cuts (the gateway's network fails; the operator's still reaches it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.auth.keys import generate_key
from gateway.auth.verify import Verifier
from gateway.errors import InvalidCredentials, StoreUnavailable
from gateway.manage.service import ManagementService
from gateway.store import KeyStore, open_store
from gateway.store.postgres import PostgresStore
from tests.adversarial.fault_proxy import FaultProxy
from tests.fakes import Clock
from tests.services import postgres_schema

PREFIX = "mk_live_"
TTL = 60.0


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture
def relay() -> Iterator[FaultProxy]:
    opened = FaultProxy(5432)
    yield opened
    opened.close()


@pytest.fixture
async def through_relay(postgres_url: str, relay: FaultProxy) -> AsyncIterator[KeyStore]:
    store = await open_store(postgres_url.replace(":5432/", f":{relay.port}/"))
    yield store
    await store.close()


@pytest.fixture
async def operator(postgres_url: str) -> AsyncIterator[ManagementService]:
    store = await open_store(postgres_url)
    yield ManagementService(store, key_prefix=PREFIX)
    await store.close()


async def cut_off(relay: FaultProxy, store: KeyStore) -> None:
    """Every connection to the store cut, and new ones refused; back once the store knows its
    notifications are lost."""
    relay.inject("reset")
    async with asyncio.timeout(10):
        while store.unheard_for() is None:
            await asyncio.sleep(0.01)


async def key_heard_of(store: KeyStore, operator: ManagementService) -> list[bytes]:
    """A new user's new key, once ``store`` has heard of both writes (NOTIFY arrives on its own)."""
    seen = store.changes()
    await operator.add_user("alice")
    created = await operator.create_key("alice")
    async with asyncio.timeout(10):
        while store.changes() < seen + 2:
            await asyncio.sleep(0.01)
    return [f"Bearer {created.key}".encode()]


def verifier(store: KeyStore, clock: Clock, *, announced: bool) -> Verifier:
    assert isinstance(store, PostgresStore)
    store.clock = clock  # how long its notifications have been lost, on the test's clock
    return Verifier(
        store,
        prefix=PREFIX,
        default_limits=(),
        ttl=TTL,
        max_entries=100,
        clock=clock,
        timer=clock,
        lookup_timeout=1.0,
        changes_announced=announced,
    )


async def test_a_key_revoked_while_the_database_is_out_of_reach_stops_within_one_ttl(
    through_relay: KeyStore, relay: FaultProxy, operator: ManagementService, clock: Clock
) -> None:
    bearer = await key_heard_of(through_relay, operator)
    gateway = verifier(through_relay, clock, announced=False)
    await gateway.verify(bearer)
    clock.tick(TTL)  # no longer fresh: the next request reads the store
    await cut_off(relay, through_relay)
    await gateway.verify(bearer)  # known good, and the outage has just begun
    (key,) = await operator.list_keys("alice")
    await operator.revoke_key(key.id)  # the operator still reaches the database
    clock.tick(TTL / 2)
    await gateway.verify(bearer)  # no way to know yet: within one TTL, as a cached verdict
    clock.tick(TTL / 2)
    with pytest.raises(StoreUnavailable):
        await gateway.verify(bearer)  # never let in past it while nothing can be checked
    # A look-up that succeeds meanwhile (a brief flap) restarts no clock: only hearing of writes
    # again does (and then every verdict is read again).
    relay.heal()
    with pytest.raises(InvalidCredentials):
        await gateway.verify([f"Bearer {generate_key(PREFIX)}".encode()])  # an unknown key, looked up
    await cut_off(relay, through_relay)
    with pytest.raises((StoreUnavailable, InvalidCredentials)):
        await gateway.verify(bearer)  # 503 while cut off, or 401 once the revocation is read


async def test_with_redis_announcing_writes_a_known_key_outlives_the_ttl(
    through_relay: KeyStore, relay: FaultProxy, operator: ManagementService, clock: Clock
) -> None:
    bearer = await key_heard_of(through_relay, operator)
    gateway = verifier(through_relay, clock, announced=True)
    await gateway.verify(bearer)
    clock.tick(TTL)
    await cut_off(relay, through_relay)
    clock.tick(10 * TTL)
    await gateway.verify(bearer)  # a write would have been announced (and forgotten it)
    gateway.set_degraded(True)  # Redis is out too: nothing would be announced
    clock.tick(TTL)
    with pytest.raises(StoreUnavailable):
        await gateway.verify(bearer)
    with pytest.raises(InvalidCredentials):
        await gateway.verify([b"Bearer " + b"x" * 20])  # a malformed key never needs the store
