"""The console's sessions: expiry (idle and absolute) on an injected clock, sign-out, ids kept
hashed; in memory and in the machine's Redis alike."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from gateway.admin.console.sessions import (
    MemorySessionRecords,
    RedisSessionRecords,
    SessionRecords,
    Sessions,
    token_keys,
    user_keys,
)
from tests.fakes import Clock
from tests.services import machine_redis_url


@pytest.fixture(params=["memory", "redis"])
async def records(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[SessionRecords]:
    if request.param == "memory":
        yield MemorySessionRecords(clock)
        return
    redis = RedisSessionRecords(machine_redis_url(), timeout=1.0)
    yield redis
    await redis.aclose()


TOKENS = [("ops", "ops-token-0123456789abcdef")]


def sessions(records: SessionRecords, clock: Clock, tokens: list[tuple[str, str]] = TOKENS) -> Sessions:
    return Sessions(records, keys=token_keys(tokens), idle_timeout=600, lifetime=3600, clock=clock)


async def test_a_session_is_found_by_its_id_until_it_is_ended(records: SessionRecords, clock: Clock) -> None:
    kept = sessions(records, clock)
    session_id, session = await kept.start("ops")
    assert len(session_id) >= 43 and session.actor == "ops" and len(session.csrf) >= 43
    found = await kept.find(session_id)
    assert found is not None and (found.actor, found.csrf) == ("ops", session.csrf)
    assert await kept.find(session_id + "x") is None
    await kept.end(session_id)
    assert await kept.find(session_id) is None


async def test_each_start_is_a_new_id_and_a_new_csrf_token(records: SessionRecords, clock: Clock) -> None:
    kept = sessions(records, clock)
    (first, one), (second, two) = await kept.start("ops"), await kept.start("ops")
    assert first != second and one.csrf != two.csrf


async def test_a_session_ends_when_idle(records: SessionRecords, clock: Clock) -> None:
    kept = sessions(records, clock)
    session_id, _ = await kept.start("ops")
    clock.tick(599)
    assert await kept.find(session_id) is not None  # seen again: idle from now on
    clock.tick(599)
    assert await kept.find(session_id) is not None
    clock.tick(600)
    assert await kept.find(session_id) is None


async def test_a_session_ends_at_its_lifetime_however_busy(records: SessionRecords, clock: Clock) -> None:
    kept = sessions(records, clock)
    session_id, _ = await kept.start("ops")
    for _ in range(11):
        clock.tick(300)
        assert await kept.find(session_id) is not None  # 3,300 s in
    clock.tick(300)
    assert await kept.find(session_id) is None


async def test_only_the_ids_hash_is_kept(clock: Clock) -> None:
    records = MemorySessionRecords(clock)
    session_id, session = await sessions(records, clock).start("ops")
    assert await records.get(session_id) is None
    assert await records.get(hashlib.sha256(session_id.encode()).hexdigest()) == session
    assert "ops" in repr(session) and session.csrf not in repr(session)


async def test_memory_keeps_a_bounded_number_of_sessions(clock: Clock) -> None:
    records = MemorySessionRecords(clock, max_sessions=3)
    kept = sessions(records, clock, [(f"op{n}", f"op{n}-token-0123456789abcdef") for n in range(4)])
    ids = [(await kept.start(f"op{n}"))[0] for n in range(4)]
    assert await kept.find(ids[0]) is None  # the least recently kept went
    assert all([await kept.find(session_id) for session_id in ids[1:]])


async def test_a_session_ends_with_its_token(records: SessionRecords, clock: Clock) -> None:
    session_id, _ = await sessions(records, clock).start("ops")
    # The token given another value (a leaked one replaced), or removed, by a restart of the config.
    assert await sessions(records, clock, [("ops", "ops-token-NEW-0123456789abcdef")]).find(session_id) is None
    session_id, _ = await sessions(records, clock).start("ops")
    assert await sessions(records, clock, [("ci", "ci-token-0123456789abcdef")]).find(session_id) is None
    assert await sessions(records, clock).find(session_id) is None  # ended, not only refused


async def test_a_record_written_without_the_token_opens_nothing(clock: Clock) -> None:
    redis = RedisSessionRecords(machine_redis_url(), timeout=1.0)
    try:
        kept = sessions(redis, clock)
        session_id, session = await kept.start("ops")
        digest = hashlib.sha256(session_id.encode()).hexdigest()
        forged = type(session)(actor="ops", csrf="x", started_at=clock.now, seen_at=clock.now, token_mark="0" * 64)
        await redis.put(digest, forged, 600)
        assert await kept.find(session_id) is None
        await redis._client.set(RedisSessionRecords.PREFIX + digest, b"not json")
        assert await kept.find(session_id) is None
    finally:
        await redis.aclose()


async def test_a_sessions_counter_counts_each_request_once_and_ends_with_it(
    records: SessionRecords, clock: Clock
) -> None:
    kept = Sessions(records, keys=None, idle_timeout=600, lifetime=3600, clock=clock)
    session_id, session = await kept.start("alice", back="https://dash.example.com/")
    other_id, other = await kept.start("alice")
    counted = await asyncio.gather(*(kept.count(session_id, session) for _ in range(10)))
    assert sorted(counted) == list(range(1, 11))  # concurrent requests each get their own number
    assert await kept.count(session_id, session, -1) == 9  # one taken back
    assert await kept.count(other_id, other) == 1
    found = await kept.find(session_id)
    assert found is not None and found.back == "https://dash.example.com/"
    await kept.end(session_id)
    assert await kept.count(session_id, session) == 1  # gone with its session


async def test_a_sessions_counter_in_redis_goes_when_its_session_can_last_no_longer(clock: Clock) -> None:
    import redis.asyncio

    records = RedisSessionRecords(machine_redis_url(), timeout=1.0)
    reader = redis.asyncio.Redis.from_url(machine_redis_url())
    try:
        kept = Sessions(records, keys=None, idle_timeout=600, lifetime=3600, clock=clock)
        session_id, session = await kept.start("alice")
        clock.tick(1000)
        await kept.count(session_id, session)
        digest = hashlib.sha256(session_id.encode()).hexdigest()
        ttl = await reader.pttl(f"{RedisSessionRecords.PREFIX}{digest}:count")
        assert 2_500_000 < ttl <= 2_600_000  # the 2,600 s left of the session's hour, not another hour
    finally:
        await records.aclose()
        await reader.aclose()


async def test_a_portal_session_record_written_without_the_tokens_opens_nothing(
    records: SessionRecords, clock: Clock
) -> None:
    kept = Sessions(records, keys=user_keys(TOKENS), idle_timeout=600, lifetime=3600, clock=clock)
    session_id, session = await kept.start("alice", back="https://dash.example.com/")
    assert await kept.find(session_id) is not None
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    # Someone who can write the records but holds no token: no mark, or a live record's mark
    # copied onto another user, a start in the future (no end), another return URL, another CSRF.
    for forged in (
        replace(session, token_mark=""),
        replace(session, actor="bob"),
        replace(session, started_at=clock.now + 1e8, seen_at=clock.now + 1e8),
        replace(session, back="javascript:alert(1)"),
        replace(session, csrf="chosen"),
    ):
        await records.put(digest, forged, 60)
        assert await kept.find(session_id) is None
    # Another deployment (other tokens) cannot open this one's sessions.
    session_id, _ = await kept.start("alice")
    other = Sessions(
        records, keys=user_keys([("ops", "another-token-0123456789")]), idle_timeout=600, lifetime=3600, clock=clock
    )
    assert await other.find(session_id) is None
    assert user_keys([]) is None


async def test_a_session_ended_while_it_was_being_read_stays_ended(records: SessionRecords, clock: Clock) -> None:
    kept = sessions(records, clock)
    for _ in range(20):
        session_id, _ = await kept.start("ops")
        found = await asyncio.gather(*(kept.find(session_id) for _ in range(10)), kept.end(session_id))
        assert await kept.find(session_id) is None, found


async def test_a_record_copied_under_another_id_or_seen_later_opens_nothing(
    records: SessionRecords, clock: Clock
) -> None:
    kept = Sessions(records, keys=user_keys(TOKENS), idle_timeout=600, lifetime=3600, clock=clock)
    session_id, _ = await kept.start("alice")
    found = await kept.find(session_id)
    assert found is not None
    # The whole live record, mark and all, written under an id of the forger's choosing.
    await records.put(hashlib.sha256(b"chosen").hexdigest(), found, 60)
    assert await kept.find("chosen") is None
    # Its last use moved on, past the idle timeout.
    clock.tick(700)
    await records.put(hashlib.sha256(session_id.encode()).hexdigest(), replace(found, seen_at=clock.now), 60)
    assert await kept.find(session_id) is None


async def test_a_malformed_record_in_redis_is_no_session() -> None:
    import redis.asyncio

    records = RedisSessionRecords(machine_redis_url(), timeout=1.0)
    writer = redis.asyncio.Redis.from_url(machine_redis_url())
    try:
        digest = hashlib.sha256(b"malformed").hexdigest()
        good = {
            "actor": "ops",
            "csrf": "c",
            "started_at": 1.0,
            "seen_at": 1.0,
            "token_mark": "",
            "back": "",
            "replaced": "",
        }
        for bad in ({"token_mark": 5}, {"started_at": "soon"}, {"seen_at": True}, {"actor": ["ops"]}):
            await writer.set(f"{RedisSessionRecords.PREFIX}{digest}", json.dumps(good | bad), px=60_000)
            assert await records.get(digest) is None
        await writer.set(f"{RedisSessionRecords.PREFIX}{digest}", json.dumps(good), px=60_000)
        assert await records.get(digest) is not None
    finally:
        await writer.delete(f"{RedisSessionRecords.PREFIX}{digest}")
        await records.aclose()
        await writer.aclose()
