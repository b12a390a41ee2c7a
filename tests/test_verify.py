"""The verifier on a real SQLite store, with an injected clock and timer (no sleeping)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import pytest

from gateway.auth.keys import generate_key, hash_key
from gateway.auth.throttle import LookupThrottle
from gateway.auth.verify import Verifier, bearer_token
from gateway.errors import AuthThrottled, InvalidCredentials, MissingCredentials, SubscriptionInactive
from gateway.manage.service import ManagementService
from gateway.store import ApiKey, KeyStore, open_store
from gateway.store.sqlite import sqlite_path
from gateway.units import parse_limits
from tests.fakes import Clock

PREFIX = "mk_live_"
T = TypeVar("T")


@pytest.fixture
async def other_process(store_url: str) -> AsyncIterator[ManagementService]:
    """The same store opened again, as the CLI in another process would."""
    opened = await open_store(store_url)
    yield ManagementService(opened, key_prefix=PREFIX)
    await opened.close()


@pytest.fixture
def verifier(store: KeyStore, clock: Clock) -> Verifier:
    return Verifier(
        store,
        prefix=PREFIX,
        default_limits=parse_limits("5/minute"),
        ttl=3600,
        max_entries=1000,
        clock=clock,
        timer=clock,
    )


def bearer(key: str) -> list[bytes]:
    return [b"Bearer " + key.encode()]


@pytest.mark.parametrize(
    ("values", "error"),
    [
        pytest.param([], MissingCredentials, id="none"),
        pytest.param([b"Bearer a", b"Bearer b"], InvalidCredentials, id="two-headers"),
        pytest.param([b"Basic dXNlcjpwYXNz"], InvalidCredentials, id="basic"),
        pytest.param([b"Bearer"], InvalidCredentials, id="no-token"),
        pytest.param([b"Bearer    "], InvalidCredentials, id="blank-token"),
        pytest.param([b"Bearer a b"], InvalidCredentials, id="two-tokens"),
        pytest.param([b"Bearer a,b"], InvalidCredentials, id="comma-list"),
        pytest.param([b"Bearerabc"], InvalidCredentials, id="no-space"),
    ],
)
def test_bearer_token_rejects(values: list[bytes], error: type[Exception]) -> None:
    with pytest.raises(error):
        bearer_token(values)


@pytest.mark.parametrize("scheme", [b"Bearer", b"bearer", b"BEARER", b"bEaReR"])
def test_bearer_scheme_is_case_insensitive(scheme: bytes) -> None:
    assert bearer_token([scheme + b"  tok  "]) == b"tok"


async def test_valid_key_then_revoked_by_another_process(
    verifier: Verifier, store: KeyStore, other_process: ManagementService
) -> None:
    service = ManagementService(store, key_prefix=PREFIX)
    await service.add_user("alice")
    created = await service.create_key("alice")
    identity = await verifier.verify(bearer(created.key))
    assert (identity.user_id, identity.key_id) == ("alice", created.record.id)
    assert identity.limits == parse_limits("5/minute")
    await verifier.verify(bearer(created.key))  # from the cache now (TTL one hour)
    await other_process.revoke_key(created.record.id)
    with pytest.raises(InvalidCredentials):
        await verifier.verify(bearer(created.key))


async def test_a_look_up_whose_client_left_is_finished_for_the_others(verifier: Verifier, store: KeyStore) -> None:
    # Two requests with the same uncached key share one look-up; the first one's client leaves
    # (its task is cancelled) while the store answers: the second still gets its answer.
    service = ManagementService(store, key_prefix=PREFIX)
    await service.add_user("alice")
    landed = 0
    for _ in range(20):
        created = await service.create_key("alice")
        first = asyncio.ensure_future(verifier.verify(bearer(created.key)))
        await asyncio.sleep(0)  # the first starts the look-up
        second = asyncio.ensure_future(verifier.verify(bearer(created.key)))
        await asyncio.sleep(0)  # the second waits for it
        if not first.done():
            landed += 1
        first.cancel()
        identity = await second
        assert identity.key_id == created.record.id
    assert landed  # the client left while the look-up was under way, at least once


def finishes_without_waiting(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` one step: it must finish without ever waiting (no I/O, no thread hop)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise AssertionError("the coroutine waited for something")


async def test_a_cache_hit_needs_no_store(verifier: Verifier, store: KeyStore) -> None:
    service = ManagementService(store, key_prefix=PREFIX)
    await service.add_user("alice")
    created = await service.create_key("alice")
    with pytest.raises(AssertionError, match="waited"):
        finishes_without_waiting(asyncio.sleep(0.01))  # the check can tell
    await verifier.verify(bearer(created.key))  # a miss: asks the store
    for _ in range(3):
        assert finishes_without_waiting(verifier.verify(bearer(created.key))).key_id == created.record.id


async def test_expiry_and_grace_need_no_signal(verifier: Verifier, store: KeyStore, clock: Clock) -> None:
    service = ManagementService(store, key_prefix=PREFIX, clock=clock)
    await service.add_user("alice")
    expiring = await service.create_key("alice", expires_in=60)
    await verifier.verify(bearer(expiring.key))
    clock.tick(59.9)
    await verifier.verify(bearer(expiring.key))
    clock.tick(0.1)
    with pytest.raises(InvalidCredentials):
        await verifier.verify(bearer(expiring.key))

    old = await service.create_key("alice")
    new, _ = await service.rotate_key(old.record.id, grace=30)
    await verifier.verify(bearer(old.key))
    await verifier.verify(bearer(new.key))
    clock.tick(30)
    with pytest.raises(InvalidCredentials):
        await verifier.verify(bearer(old.key))
    await verifier.verify(bearer(new.key))


async def test_subscription_lapse_and_return(
    verifier: Verifier, store: KeyStore, other_process: ManagementService
) -> None:
    service = ManagementService(store, key_prefix=PREFIX)
    await service.add_user("alice")
    created = await service.create_key("alice")
    await verifier.verify(bearer(created.key))
    await other_process.set_subscription("alice", "inactive")
    with pytest.raises(SubscriptionInactive):
        await verifier.verify(bearer(created.key))
    await other_process.set_subscription("alice", "active")
    await verifier.verify(bearer(created.key))


async def test_unknown_key_is_remembered_until_a_key_is_added(
    verifier: Verifier, store: KeyStore, other_process: ManagementService
) -> None:
    await other_process.add_user("alice")
    key = generate_key(PREFIX)
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            await verifier.verify(bearer(key))
    # The key is added after the miss was cached: it works on its very next request.
    await other_process.store.add_key(
        ApiKey(id="key_x", user_id="alice", name=None, prefix=key[:12], key_hash=hash_key(key.encode()), created_at=1.0)
    )
    assert (await verifier.verify(bearer(key))).key_id == "key_x"


async def test_malformed_keys_never_reach_the_store(verifier: Verifier) -> None:
    good = generate_key(PREFIX)
    mistyped = good[:-1] + ("x" if good[-1] != "x" else "y")
    for token in ["nope", "mk_live_short", generate_key("other_"), mistyped]:
        with pytest.raises(InvalidCredentials):
            finishes_without_waiting(verifier.verify(bearer(token)))


def test_error_messages_never_hold_the_key() -> None:
    key = generate_key(PREFIX)
    for values in ([b"Bearer " + key.encode() + b" x"], [b"Basic " + key.encode()]):
        with pytest.raises(InvalidCredentials) as caught:
            bearer_token(values)
        assert key not in str(caught.value) and key not in repr(caught.value)


def revoke_unheard(store_url: str, key_id: str) -> None:
    """A revocation this process cannot hear of: written to the shared store by another host,
    which does not touch this host's change counter."""
    with contextlib.closing(sqlite3.connect(sqlite_path(store_url))) as db, db:
        db.execute("UPDATE api_keys SET revoked_at = 1 WHERE id = ?", (key_id,))


async def test_a_new_shared_epoch_empties_the_cache(verifier: Verifier, store: KeyStore, store_url: str) -> None:
    service = ManagementService(store, key_prefix=PREFIX)
    await service.add_user("alice")
    created = await service.create_key("alice")
    assert verifier.note_epoch(b"1795992434597421")  # the first epoch seen
    await verifier.verify(bearer(created.key))
    assert not verifier.note_epoch(b"1795992434597421")
    revoke_unheard(store_url, created.record.id)
    await verifier.verify(bearer(created.key))  # still the cached verdict
    assert verifier.note_epoch(b"1795992434597422")  # another replica announced a write
    with pytest.raises(InvalidCredentials):
        await verifier.verify(bearer(created.key))


async def test_while_redis_is_down_verdicts_live_at_most_the_degraded_ttl(
    verifier: Verifier, store: KeyStore, store_url: str, clock: Clock
) -> None:
    service = ManagementService(store, key_prefix=PREFIX)
    await service.add_user("alice")
    created = await service.create_key("alice")
    verifier.set_degraded(True)
    await verifier.verify(bearer(created.key))
    revoke_unheard(store_url, created.record.id)
    clock.tick(verifier.degraded_ttl * 0.9)
    await verifier.verify(bearer(created.key))  # still the cached verdict
    clock.tick(verifier.degraded_ttl * 0.2)
    with pytest.raises(InvalidCredentials):
        await verifier.verify(bearer(created.key))


async def test_legacy_keys_go_through_the_negative_cache(store: KeyStore, clock: Clock) -> None:
    verifier = Verifier(
        store,
        prefix=PREFIX,
        legacy_prefixes=("mpa_",),
        default_limits=parse_limits("5/minute"),
        ttl=3600,
        max_entries=1000,
        clock=clock,
        timer=clock,
    )
    unknown = "mpa_" + "x" * 40
    with pytest.raises(InvalidCredentials):
        await verifier.verify(bearer(unknown))  # a store look-up
    with pytest.raises(InvalidCredentials):
        finishes_without_waiting(verifier.verify(bearer(unknown)))  # remembered: no store this time
    with pytest.raises(InvalidCredentials):
        finishes_without_waiting(verifier.verify(bearer("mk_other_" + "x" * 40)))  # no prefix: never looked up


async def test_a_key_once_found_good_is_never_throttled_with_the_guesses_of_its_address(
    store: KeyStore, clock: Clock
) -> None:
    throttle = LookupThrottle(parse_limits("2/minute")[0], clock=clock)
    verifier = Verifier(
        store, prefix=PREFIX, default_limits=(), ttl=5, max_entries=100, clock=clock, timer=clock, throttle=throttle
    )
    service = ManagementService(store, key_prefix=PREFIX)
    await service.add_user("alice")
    created = await service.create_key("alice")
    assert (await verifier.verify(bearer(created.key), "203.0.113.7")).key_id == created.record.id
    # A guesser at the same address (a NAT, say) uses up the address's look-ups...
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            await verifier.verify(bearer(generate_key(PREFIX)), "203.0.113.7")
    with pytest.raises(AuthThrottled):
        await verifier.verify(bearer(generate_key(PREFIX)), "203.0.113.7")
    # ... and a write to the store empties the cache, and the key's verdict expires anyway:
    await service.add_user("bob")
    clock.tick(10)
    # the good key, looked up again, is not taken for a guess.
    assert (await verifier.verify(bearer(created.key), "203.0.113.7")).key_id == created.record.id
    with pytest.raises(AuthThrottled):
        await verifier.verify(bearer(generate_key(PREFIX)), "203.0.113.7")
