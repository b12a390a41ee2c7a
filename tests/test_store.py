"""The key store's contract, run against both stores so that they cannot drift: a real SQLite file
in a temporary folder, and the machine's PostgreSQL in a schema of its own."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.store import (
    ApiKey,
    DailyUsage,
    KeyStore,
    NewerSchemaError,
    StoreError,
    UsageDelta,
    User,
    WindowCount,
    open_store,
)
from gateway.store.schema import SCHEMA_VERSION
from gateway.store.sqlite import sqlite_path


@pytest.fixture
def store_url(each_store_url: str) -> str:
    return each_store_url


async def set_schema_version(url: str, version: int) -> None:
    """What a newer gateway would have left behind."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(sqlite_path(url))) as db:
            db.execute(f"PRAGMA user_version = {version}")
        return
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("UPDATE gateway_schema SET version = $1", version)
    finally:
        await connection.close()


def moved(store: KeyStore, seen: int) -> bool:
    return store.changes() != seen


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def key(key_id: str, user_id: str = "alice", key_hash: str = "a" * 64, **kwargs: Any) -> ApiKey:
    return ApiKey(
        id=key_id, user_id=user_id, name="n", prefix="mk_live_abcd", key_hash=key_hash, created_at=1.0, **kwargs
    )


async def test_users(store: KeyStore) -> None:
    assert await store.add_user(User("alice", "active", 1.0, 1.0))
    assert not await store.add_user(User("alice", "inactive", 2.0, 2.0))
    assert await store.get_user("alice") == User("alice", "active", 1.0, 1.0)
    assert await store.get_user("nobody") is None
    assert await store.set_subscription("alice", "inactive", 5.0) == User("alice", "inactive", 1.0, 5.0)
    assert await store.set_subscription("nobody", "inactive", 5.0) is None
    assert [u.id for u in await store.list_users()] == ["alice"]


async def test_keys(store: KeyStore) -> None:
    await store.add_user(User("alice", "active", 1.0, 1.0))
    await store.add_user(User("bob", "inactive", 1.0, 1.0))
    await store.add_key(key("key_1", key_hash="1" * 64))
    await store.add_key(key("key_2", user_id="bob", key_hash="2" * 64, expires_at=50.0))
    found = await store.find_key("2" * 64)
    assert found is not None
    assert found[0].id == "key_2" and found[0].expires_at == 50.0
    assert found[1].subscription == "inactive"
    assert await store.find_key("3" * 64) is None
    assert [k.id for k in await store.list_keys()] == ["key_1", "key_2"]
    assert [k.id for k in await store.list_keys("bob")] == ["key_2"]
    with pytest.raises((sqlite3.IntegrityError, asyncpg.UniqueViolationError)):
        await store.add_key(key("key_3", key_hash="1" * 64))  # the hash is unique

    revoked = await store.revoke_key("key_1", 10.0)
    assert revoked is not None and revoked.revoked_at == 10.0
    again = await store.revoke_key("key_1", 20.0)
    assert again is not None and again.revoked_at == 10.0  # an earlier revocation stands
    assert await store.revoke_key("key_9", 10.0) is None

    # With grace: the old key expires then (never later than it would have), without a revocation.
    await store.rotate_key("key_2", key("key_4", user_id="bob", key_hash="4" * 64), now=20.0, grace_until=30.0)
    old = await store.get_key("key_2")
    assert old is not None and (old.expires_at, old.revoked_at, old.replaced_by) == (30.0, None, "key_4")
    assert old.status(29.0) == "active" and old.status(30.0) == "revoked"
    await store.rotate_key("key_4", key("key_5", user_id="bob", key_hash="5" * 64), now=40.0, grace_until=None)
    rotated = await store.get_key("key_4")
    assert rotated is not None and (rotated.revoked_at, rotated.replaced_by) == (40.0, "key_5")
    assert await store.get_key("key_5") is not None


async def test_at_most_max_active_keys_however_many_additions_race(store: KeyStore) -> None:
    await store.add_user(User("alice", "active", 1.0, 1.0))
    await store.add_user(User("bob", "active", 1.0, 1.0))
    await store.add_key(key("revoked", key_hash="r" * 64, revoked_at=5.0))
    await store.add_key(key("expired", key_hash="e" * 64, expires_at=9.0))
    await store.add_key(key("bobs", user_id="bob", key_hash="b" * 64))
    added = await asyncio.gather(
        *(store.add_key(key(f"k{n}", key_hash=f"{n:064d}"), max_active=3, now=10.0) for n in range(12))
    )
    # Revoked, expired and another user's keys do not count; the three added are all there are.
    assert sorted(added) == [False] * 9 + [True] * 3
    assert len([k for k in await store.list_keys("alice") if k.status(10.0) == "active"]) == 3
    assert await store.add_key(key("bob2", user_id="bob", key_hash="c" * 64), max_active=3, now=10.0)
    # A rotation with a grace overlaps by one: at the limit (3), one may; then (4) none.
    first, second, _ = [k.id for k in await store.list_keys("alice") if k.status(10.0) == "active"]
    assert await store.rotate_key(first, key("g1", key_hash="g" * 64), now=10.0, grace_until=99.0, max_active=3)
    refused = await store.rotate_key(second, key("g2", key_hash="h" * 64), now=10.0, grace_until=99.0, max_active=3)
    assert not refused and await store.get_key("g2") is None
    unchanged = await store.get_key(second)
    assert unchanged is not None and unchanged.replaced_by is None and unchanged.expires_at is None
    # A revoked key is not rotated (a revocation racing a rotation: no working replacement).
    await store.revoke_key(first, 11.0)
    for grace in (None, 99.0):
        assert not await store.rotate_key(first, key("g4", key_hash="j" * 64), now=12.0, grace_until=grace)
        assert await store.get_key("g4") is None
    # Rotating now adds no active key: not limited.
    assert await store.rotate_key(second, key("g3", key_hash="i" * 64), now=10.0, grace_until=None, max_active=3)


async def test_a_key_for_active_users_only_is_refused_or_revoked_beside_a_retirement(store: KeyStore) -> None:
    await store.add_user(User("alice", "active", 1.0, 1.0))
    await store.add_key(key("first", key_hash="f" * 64))
    outcomes = await asyncio.gather(
        *(store.add_key(key(f"k{n}", key_hash=f"{n:064d}"), active_user=True, now=10.0) for n in range(8)),
        store.rotate_key("first", key("r", key_hash="e" * 64), now=10.0, grace_until=99.0, active_user=True),
        store.retire_user("alice", 10.0),
    )
    assert outcomes[-1] is not None
    # Whatever landed before the retirement was revoked by it; nothing landed after it.
    assert [k.id for k in await store.list_keys("alice") if k.revoked_at is None] == []
    assert not await store.add_key(key("late", key_hash="d" * 64), active_user=True, now=11.0)
    assert await store.get_key("late") is None
    assert not await store.rotate_key("r", key("r2", key_hash="c" * 64), now=11.0, grace_until=None, active_user=True)
    # Active again, but changed since a session that asks opened: no key for that session.
    await store.set_subscription("alice", "active", 12.0)
    assert not await store.add_key(key("s1", key_hash="b" * 64), active_user=True, unchanged_since=11.5)
    assert await store.add_key(key("s2", key_hash="a" * 64), active_user=True, unchanged_since=12.5)


async def test_a_key_is_replaced_once_however_many_rotations_race(store: KeyStore) -> None:
    await store.add_user(User("alice", "active", 1.0, 1.0))
    await store.add_key(key("key_old", key_hash="0" * 64, expires_at=1000.0))
    replacements = [key(f"key_new{n}", key_hash=f"{n}" * 64, expires_at=1000.0) for n in range(1, 6)]
    outcomes = await asyncio.gather(
        *(store.rotate_key("key_old", new, now=10.0, grace_until=600.0) for new in replacements)
    )
    assert sorted(outcomes) == [False, False, False, False, True]
    winner = replacements[outcomes.index(True)].id
    old = await store.get_key("key_old")
    assert old is not None and old.replaced_by == winner and old.expires_at == 600.0
    # The losers wrote nothing: no second replacement exists.
    assert sorted(k.id for k in await store.list_keys("alice")) == sorted(["key_old", winner])


async def test_retiring_a_user_revokes_all_its_keys_in_one_write(store: KeyStore) -> None:
    await store.add_user(User("alice", "active", 1.0, 1.0))
    await store.add_user(User("bob", "active", 1.0, 1.0))
    await store.add_key(key("key_1", key_hash="1" * 64))
    await store.add_key(key("key_2", key_hash="2" * 64, revoked_at=5.0))
    await store.add_key(key("key_3", key_hash="3" * 64, expires_at=6.0))  # expired by then: revoked too
    await store.add_key(key("key_4", user_id="bob", key_hash="4" * 64))
    assert await store.retire_user("alice", 10.0) == (User("alice", "inactive", 1.0, 10.0), 2)
    revoked = {k.id: k.revoked_at for k in await store.list_keys("alice")}
    assert revoked == {"key_1": 10.0, "key_2": 5.0, "key_3": 10.0}  # an earlier revocation stands
    assert [k.revoked_at for k in await store.list_keys("bob")] == [None]
    assert await store.retire_user("alice", 20.0) == (User("alice", "inactive", 1.0, 20.0), 0)
    assert await store.retire_user("nobody", 10.0) is None
    assert await store.get_user("nobody") is None


async def test_every_write_advances_the_change_counter(store: KeyStore, store_url: str) -> None:
    other = await open_store(store_url)  # another process's view of the same store (PostgreSQL: notified)
    try:
        seen = other.changes()
        writes = [
            store.add_user(User("alice", "active", 1.0, 1.0)),
            store.set_subscription("alice", "inactive", 2.0),
            store.add_key(key("key_1")),
            store.rotate_key("key_1", key("key_2", key_hash="b" * 64), now=3.0, grace_until=None),
            store.revoke_key("key_2", 4.0),
            store.retire_user("alice", 5.0),
        ]
        for write in writes:
            await write
            await until(functools.partial(moved, other, seen))
            seen = other.changes()
    finally:
        await other.close()


async def test_a_path_through_a_symbolic_link_shares_the_change_counter(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    served = await open_store(f"sqlite:///{tmp_path}/real/gateway.db")
    other = await open_store(f"sqlite:///{tmp_path}/link/gateway.db")  # the CLI, configured otherwise
    try:
        seen = served.changes()
        await other.add_user(User("alice", "active", 1.0, 1.0))
        assert moved(served, seen)
    finally:
        await other.close()
        await served.close()


async def test_key_repr_hides_the_hash() -> None:
    assert "a" * 64 not in repr(key("key_1"))


async def test_schema_is_versioned_and_migrated_once(store_url: str) -> None:
    stores = await asyncio.gather(*(open_store(store_url) for _ in range(4)))  # concurrent start-ups
    try:
        assert {await s.schema_version() for s in stores} == {SCHEMA_VERSION}
        assert await stores[0].migrate() == SCHEMA_VERSION
    finally:
        for s in stores:
            await s.close()


async def test_a_newer_store_is_refused(store_url: str) -> None:
    await (await open_store(store_url)).close()
    await set_schema_version(store_url, SCHEMA_VERSION + 1)
    with pytest.raises(NewerSchemaError, match="newer than this gateway's .*: upgrade the gateway"):
        await open_store(store_url)


async def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await open_store(f"sqlite:///{tmp_path}/absent/gateway.db")


async def test_windows_are_saved_over_and_closed_ones_dropped(store: KeyStore) -> None:
    changes = store.changes()
    day = WindowCount("key", "key_a", "3/86400", 2, 1000.0)
    minute = WindowCount("key", "key_a", "100/60", 2, 160.0)
    await store.save_windows([day, minute, WindowCount("key", "key_b", "3/86400", 1, 500.0)], now=100.0)
    await store.save_windows([WindowCount("key", "key_a", "3/86400", 3, 1000.0)], now=100.0)
    assert sorted(await store.load_windows(now=100.0), key=str) == sorted(
        [WindowCount("key", "key_a", "3/86400", 3, 1000.0), minute, WindowCount("key", "key_b", "3/86400", 1, 500.0)],
        key=str,
    )
    assert sorted(await store.load_windows(now=200.0), key=str) == sorted(
        [WindowCount("key", "key_a", "3/86400", 3, 1000.0), WindowCount("key", "key_b", "3/86400", 1, 500.0)], key=str
    )
    await store.save_windows([], now=600.0)  # the minute and key_b's day have closed: gone
    assert await store.load_windows(now=0.0) == [WindowCount("key", "key_a", "3/86400", 3, 1000.0)]
    assert store.changes() == changes  # saving windows empties no cache


async def test_usage_per_day_per_key_and_per_user(store: KeyStore) -> None:
    await store.add_user(User("alice", "active", 1.0, 1.0))
    await store.add_user(User("bob", "active", 1.0, 1.0))
    await store.add_key(key("key_a"))
    await store.add_key(key("key_b", key_hash="b" * 64))
    await store.add_key(key("key_c", user_id="bob", key_hash="c" * 64))
    await store.add_usage(
        {"key_a": UsageDelta(requests=2, rate_limited=1), "key_c": UsageDelta(requests=9)}, "2026-12-05"
    )
    await store.add_usage({"key_a": UsageDelta(requests=1, credits=4), "key_b": UsageDelta(requests=5)}, "2026-12-06")
    await store.add_usage({"key_b": UsageDelta(refused_credits=2)}, "2026-12-06")
    by_key = await store.daily_usage(key_id="key_a", since="2026-12-01", until="2026-12-31")
    assert by_key == [DailyUsage("2026-12-05", 2, 1, 0, 0), DailyUsage("2026-12-06", 1, 0, 4, 0)]
    by_user = await store.daily_usage(user_id="alice", since="2026-12-06", until="2026-12-06")
    assert by_user == [DailyUsage("2026-12-06", 6, 0, 4, 2)]  # key_a and key_b; never bob's key_c
    await store.drop_usage_before("2026-12-06")
    assert await store.daily_usage(key_id="key_a", since="2026-12-01", until="2026-12-31") == [
        DailyUsage("2026-12-06", 1, 0, 4, 0)
    ]
    kept = await store.get_key("key_a")
    assert kept is not None and kept.requests == 3  # the lifetime counter keeps the dropped day


async def test_the_busiest_keys_of_a_day(store: KeyStore) -> None:
    await store.add_user(User("alice", "active", 1.0, 1.0))
    for name in ("a", "b", "c", "d"):
        await store.add_key(key(f"key_{name}", key_hash=name * 64))
    await store.add_usage({"key_a": UsageDelta(requests=2), "key_b": UsageDelta(requests=7, credits=3)}, "2026-12-06")
    await store.add_usage({"key_c": UsageDelta(requests=5), "key_d": UsageDelta(rate_limited=4)}, "2026-12-06")
    await store.add_usage({"key_a": UsageDelta(requests=50)}, "2026-12-05")  # another day
    busiest = await store.busiest_keys("2026-12-06", 2)
    assert [(k.id, k.user_id, k.prefix, usage) for k, usage in busiest] == [
        ("key_b", "alice", "mk_live_abcd", DailyUsage("2026-12-06", 7, 0, 3, 0)),
        ("key_c", "alice", "mk_live_abcd", DailyUsage("2026-12-06", 5, 0, 0, 0)),
    ]
    # A key that only had requests refused that day made none: it is not among them.
    assert [k.id for k, _ in await store.busiest_keys("2026-12-06", 10)] == ["key_b", "key_c", "key_a"]
    assert await store.busiest_keys("2026-12-07", 10) == []


async def test_usage_from_several_processes_adds_up(store_url: str) -> None:
    stores = [await open_store(store_url) for _ in range(3)]
    try:
        await stores[0].add_user(User("alice", "active", 1.0, 1.0))
        await stores[0].add_key(key("key_1"))
        flushes = [
            s.add_usage({"key_1": UsageDelta(requests=10, credits=3, last_used_at=100.0 + i)}, "2026-12-06")
            for i, s in enumerate(stores)
        ]
        await asyncio.gather(*flushes)
        used = await stores[1].get_key("key_1")
        assert used is not None and (used.requests, used.credits, used.last_used_at) == (30, 9, 102.0)
        [total] = await stores[2].usage_by_user("alice")
        assert (total.requests, total.credits, total.last_used_at) == (30, 9, 102.0)
        [day] = await stores[0].daily_usage(key_id="key_1", since="2026-12-06", until="2026-12-06")
        assert (day.requests, day.credits) == (30, 9)  # the day's count adds up across processes too
    finally:
        for s in stores:
            await s.close()


async def test_a_look_up_abandoned_midway_hides_no_later_write(store: KeyStore, store_url: str) -> None:
    # A look-up cancelled while the store runs it (a look-up timeout, a client gone) must not leave
    # the connection reading an old snapshot: the next look-up sees a revocation made meanwhile.
    await store.add_user(User("alice", "active", 1.0, 1.0))
    other = await open_store(store_url)  # another process's connection, the CLI's say
    try:
        for attempt in range(10):  # the cancel lands at different points of the look-up
            key_hash = f"{attempt:064d}"
            await store.add_key(key(f"key_{attempt}", key_hash=key_hash))
            abandoned = asyncio.ensure_future(store.find_key(key_hash))
            for _ in range(attempt):
                await asyncio.sleep(0)
            abandoned.cancel()
            await other.revoke_key(f"key_{attempt}", 10.0)
            found = await store.find_key(key_hash)
            assert found is not None and found[0].revoked_at == 10.0, f"attempt {attempt}: the revocation is hidden"
    finally:
        await other.close()


async def test_a_portal_link_is_taken_once_and_expired_ones_are_swept(store: KeyStore) -> None:
    await store.add_portal_link("d1", "alice", "https://dash.example.com/", expires_at=200.0, now=100.0)
    await store.add_portal_link("d2", "bob", None, expires_at=150.0, now=100.0)
    assert await store.take_portal_link("d1") == ("alice", "https://dash.example.com/", 200.0)
    assert await store.take_portal_link("d1") is None  # once
    assert await store.take_portal_link("unknown") is None
    # Adding a link forgets those expired by then.
    await store.add_portal_link("d3", "alice", None, expires_at=400.0, now=300.0)
    assert await store.take_portal_link("d2") is None
    assert await store.take_portal_link("d3") == ("alice", None, 400.0)
