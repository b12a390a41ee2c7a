"""The Redis side of shared limits, in process against the machine's Redis: exact counts under
concurrency, all-or-nothing charging of a key's windows, and the change epoch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.ratelimit.limiter import KEY, USER, Charge, Decision, Window
from gateway.ratelimit.redis_state import EPOCH_KEY, RedisState
from gateway.units import parse_limits
from tests.services import machine_redis_url


def shown(decision: Decision) -> Window:
    """The window a decision's headers describe (there is one unless every limit is only observed)."""
    assert decision.shown is not None
    return decision.shown


@pytest.fixture
async def state() -> AsyncIterator[RedisState]:
    opened = RedisState(machine_redis_url(), timeout=2)
    yield opened
    await opened.aclose()


async def test_simultaneous_hits_are_counted_exactly(state: RedisState) -> None:
    limits = parse_limits("10/minute")
    decisions = await asyncio.gather(*(state.hit("key_exact", limits) for _ in range(30)))
    assert sum(decision.allowed for decision, _ in decisions) == 10
    remaining = sorted(decision.windows[0].remaining for decision, _ in decisions if decision.allowed)
    assert remaining == list(range(10))


async def test_a_request_denied_by_one_window_is_charged_to_none(state: RedisState) -> None:
    limits = parse_limits("5/minute;3/hour")
    answers = [(await state.hit("key_both", limits))[0] for _ in range(4)]
    assert [d.allowed for d in answers] == [True, True, True, False]
    # The hour window denied the fourth: the minute window still counts three, not four.
    assert [w.remaining for w in answers[-1].windows] == [2, 0]
    assert shown(answers[-1]).item.GRANULARITY.name == "hour"
    assert 3590 < shown(answers[-1]).reset_at - state.clock() <= 3600


async def test_the_epoch_moves_with_every_change_and_never_comes_back(state: RedisState) -> None:
    limits = parse_limits("100/minute")
    _, first = await state.hit("key_epoch", limits)
    assert (await state.hit("key_epoch", limits))[1] == first
    await state.announce_change()
    _, second = await state.hit("key_epoch", limits)
    assert int(second) == int(first) + 1
    # Redis keeps nothing on disk: after a restart the epoch starts again, above where it was.
    await state.client.delete(EPOCH_KEY)
    _, restarted = await state.hit("key_epoch", limits)
    assert int(restarted) > int(second)


async def test_a_users_window_counts_every_key_and_is_apart_from_theirs(state: RedisState) -> None:
    user, per_key = parse_limits("10/minute"), parse_limits("4/minute")
    # A user id equal to a key id names other windows: the two scopes never share a counter.
    charges = [(Charge(KEY, f"key_u{i % 3}", per_key), Charge(USER, "key_u0", user)) for i in range(30)]
    decisions = await asyncio.gather(*(state.hit_all(c) for c in charges))
    assert sum(decision.allowed for decision, _ in decisions) == 10
    denied = [decision for decision, _ in decisions if not decision.allowed]
    assert {shown(decision).scope for decision in denied} <= {KEY, USER} and any(shown(d).scope == USER for d in denied)
    # Charged to none when denied: each key counted exactly its share of the user's 10.
    counts = []
    for i in range(3):
        probe, _ = await state.hit(f"key_u{i}", per_key)  # one more on the key alone: its count shows
        counts.append(4 - probe.windows[0].remaining - 1 if probe.allowed else 4)
    assert sum(counts) == 10


async def test_an_observed_window_never_refuses_in_redis_either(state: RedisState) -> None:
    charges = (
        Charge(KEY, "key_obs", parse_limits("100/minute")),
        Charge(USER, "obs-user", parse_limits("3/minute"), True),
    )
    decisions = [decision for decision, _ in await asyncio.gather(*(state.hit_all(charges) for _ in range(10)))]
    assert all(d.allowed for d in decisions)
    assert sum(len(d.observed) for d in decisions) == 7  # exactly what 3/minute would have refused
    assert all(w.scope == KEY for d in decisions for w in d.windows)


async def test_route_and_user_names_cannot_run_into_each_other(state: RedisState) -> None:
    # limits joins a window's name with "/": a route and a user id with "/" in them must stay apart.
    limit = parse_limits("1/minute")
    first = Charge("user:POST /api/v1/mockups", "generate/alice", limit)
    second = Charge("user:POST /api/v1/mockups/generate", "alice", limit)
    assert (await state.hit_all((first,)))[0].allowed
    assert (await state.hit_all((second,)))[0].allowed  # a window of its own, not the first's
