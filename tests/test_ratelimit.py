"""The limiter on its in-memory storage, with an injected clock (no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import RateLimitHeaders
from gateway.ratelimit.headers import RateLimitHeaderWriter
from gateway.ratelimit.limiter import KEY, USER, Charge, Decision, Limiter, Window
from gateway.units import parse_limits
from tests.fakes import Clock


def shown(decision: Decision) -> Window:
    """The window a decision's headers describe (there is one unless every limit is only observed)."""
    assert decision.shown is not None
    return decision.shown


@pytest.fixture
def limiter(clock: Clock) -> Limiter:
    return Limiter(clock=clock)


async def test_fixed_window_opens_at_the_first_request(limiter: Limiter, clock: Clock) -> None:
    """The Mockupanda behaviour: the whole allowance early in the window, then nothing until it ends."""
    key = ("key_a", parse_limits("100/minute"))
    for second in range(100):
        clock.now = 1_700_000_000.0 + second * 0.3  # 100 requests in the first 30 s
        assert (limiter.hit(*key)).allowed
    clock.now = 1_700_000_059.9
    denied = limiter.hit(*key)
    assert not denied.allowed
    assert limiter.retry_after(shown(denied)) == 1
    clock.now = 1_700_000_060.0
    assert (limiter.hit(*key)).allowed


async def test_a_denied_request_is_charged_to_no_window(limiter: Limiter, clock: Clock) -> None:
    key = ("key_b", parse_limits("5/minute;8/day"))
    results = [limiter.hit(*key) for _ in range(7)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 2
    assert [w.remaining for w in results[-1].windows] == [0, 3]  # the day was charged 5, not 7
    clock.tick(60)
    results = [limiter.hit(*key) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    denied = results[-1]
    assert shown(denied).item.get_expiry() == 86400  # the day denied it
    assert limiter.retry_after(shown(denied)) == 86400 - 60


async def test_exact_under_concurrency(limiter: Limiter) -> None:
    key = ("key_c", parse_limits("20/minute;30/hour"))

    async def one() -> bool:
        return limiter.hit(*key).allowed

    results = await asyncio.gather(*(one() for _ in range(60)))
    assert sum(results) == 20


async def test_the_window_shown(limiter: Limiter, clock: Clock) -> None:
    key = ("key_d", parse_limits("3/minute;10/day"))
    first = limiter.hit(*key)
    assert shown(first).item.get_expiry() == 60 and shown(first).remaining == 2  # fewest remaining
    assert shown(limiter.hit("key_e", parse_limits("5/minute;5/day"))).item.get_expiry() == 86400  # a tie


async def test_memory_follows_active_keys(limiter: Limiter, clock: Clock) -> None:
    items = parse_limits("10/second")
    for i in range(5000):
        limiter.hit(f"key_{i}", items)
    assert len(limiter) == 5000
    clock.tick(2)
    for i in range(5000):  # new keys: the old ones, their windows closed, are swept out on the way
        limiter.hit(f"other_{i}", items)
    assert len(limiter) <= 5000 + Limiter.MIN_SWEEP_INTERVAL


async def test_changed_limits_start_afresh_but_equal_ones_do_not(limiter: Limiter) -> None:
    for _ in range(3):
        limiter.hit("key_h", parse_limits("3/minute"))
    assert not limiter.hit("key_h", parse_limits("3/minute")).allowed  # equal limits, parsed again
    assert limiter.hit("key_h", parse_limits("6/minute")).allowed


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (
            "x-ratelimit",
            {"x-ratelimit-limit": "3", "x-ratelimit-remaining": "2", "x-ratelimit-reset": "1700000060"},
        ),
        (
            "ietf",
            {
                "ratelimit-policy": '"minute";q=3;w=60, "day";q=10;w=86400',
                "ratelimit": '"minute";r=2;t=60, "day";r=9;t=86400',
            },
        ),
        ("none", {}),
    ],
)
async def test_headers(limiter: Limiter, clock: Clock, mode: RateLimitHeaders, expected: dict[str, str]) -> None:
    decision = limiter.hit("key_f", parse_limits("3/minute;10/day"))
    headers = RateLimitHeaderWriter(mode).headers(decision, clock())
    assert {name.decode(): value.decode() for name, value in headers} == expected


async def test_both_header_sets(limiter: Limiter, clock: Clock) -> None:
    decision = limiter.hit("key_g", parse_limits("5/2minutes"))
    names = [name for name, _ in RateLimitHeaderWriter("both").headers(decision, clock())]
    assert names == [
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
        b"ratelimit-policy",
        b"ratelimit",
    ]
    assert (
        dict(RateLimitHeaderWriter("ietf").headers(decision, clock()))[b"ratelimit-policy"] == b'"2minutes";q=5;w=120'
    )


@pytest.mark.parametrize("text", ["", "lots", "0/minute", "10/fortnight", "5 per"])
def test_bad_limits(text: str) -> None:
    with pytest.raises(ValueError, match="limits such as|at least one limit"):
        parse_limits(text)


def test_saved_windows_resume_where_they_were(clock: Clock) -> None:
    """What a restart on the embedded store does: the windows taken from one limiter and given to
    the next resume each key at its count, with the same end, at the key's first request."""
    limits = parse_limits("100/minute;3/day")
    first = Limiter(clock=clock)
    assert [first.hit("key_a", limits).allowed for _ in range(3)] == [True] * 3
    first.hit("key_b", limits)
    saved = first.take_changed()
    assert first.take_changed() == []  # nothing charged since
    assert sorted((w.owner, w.spec, w.hits, w.ends_at) for w in saved) == [
        ("key_a", "100/60", 3, clock.now + 60),
        ("key_a", "3/86400", 3, clock.now + 86400),
        ("key_b", "100/60", 1, clock.now + 60),
        ("key_b", "3/86400", 1, clock.now + 86400),
    ]

    clock.tick(61)  # the minute has closed, the day has not
    second = Limiter(clock=clock)
    second.restore(saved)
    denied = second.hit("key_a", limits)
    assert not denied.allowed
    assert shown(denied).item.get_expiry() == 86400
    assert second.retry_after(shown(denied)) == 86400 - 61
    after_b = second.hit("key_b", limits)
    assert after_b.allowed and [w.remaining for w in after_b.windows] == [99, 1]
    assert second.hit("key_c", limits).allowed  # a key with nothing saved starts afresh


def test_a_window_saved_under_other_limits_is_not_resumed(clock: Clock) -> None:
    first = Limiter(clock=clock)
    for _ in range(3):
        first.hit("key_a", parse_limits("3/day"))
    second = Limiter(clock=clock)
    second.restore(first.take_changed())
    assert [w.remaining for w in second.hit("key_a", parse_limits("5/day")).windows] == [4]


def test_windows_that_could_not_be_saved_are_taken_again(clock: Clock) -> None:
    limiter = Limiter(clock=clock)
    limits = parse_limits("10/minute")
    limiter.hit("key_a", limits)
    taken = limiter.take_changed()
    limiter.put_back(taken)
    limiter.hit("key_a", limits)  # charged again meanwhile: the next save has the count as it is now
    assert [(w.owner, w.hits) for w in limiter.take_changed()] == [("key_a", 2)]


def test_a_users_keys_share_its_window(limiter: Limiter) -> None:
    per_key, per_user = parse_limits("3/minute"), parse_limits("5/minute;100/day")

    def hit(key_id: str) -> bool:
        return limiter.hit_all((Charge(KEY, key_id, per_key), Charge(USER, "alice", per_user))).allowed

    assert [hit("key_a") for _ in range(3)] + [hit("key_b") for _ in range(3)] == [True] * 5 + [False]
    denied = limiter.hit_all((Charge(KEY, "key_c", per_key), Charge(USER, "alice", per_user)))
    assert not denied.allowed and (shown(denied).scope, shown(denied).item.amount) == (USER, 5)
    # Denied by the user's window, charged to none: key_c's own window is untouched.
    assert [w.remaining for w in denied.windows if w.scope == KEY] == [3]
    # Another user's keys are not counted with alice's.
    assert limiter.hit_all((Charge(KEY, "key_d", per_key), Charge(USER, "bob", per_user))).allowed


def test_the_shown_window_is_the_closest_to_refusing_whatever_its_scope(limiter: Limiter) -> None:
    decision = limiter.hit_all(
        (Charge(KEY, "key_a", parse_limits("100/minute")), Charge(USER, "alice", parse_limits("2/minute")))
    )
    assert (shown(decision).scope, shown(decision).remaining) == (USER, 1)


def test_a_users_saved_windows_resume_too(clock: Clock) -> None:
    limits = (Charge(KEY, "key_a", parse_limits("10/day")), Charge(USER, "alice", parse_limits("2/day")))
    first = Limiter(clock=clock)
    assert [first.hit_all(limits).allowed for _ in range(2)] == [True, True]
    saved = first.take_changed()
    assert sorted((w.scope, w.owner, w.hits) for w in saved) == [(KEY, "key_a", 2), (USER, "alice", 2)]
    second = Limiter(clock=clock)
    second.restore(saved)
    denied = second.hit_all(limits)
    assert not denied.allowed and shown(denied).scope == USER


def test_an_observed_limit_counts_and_reports_but_never_refuses(limiter: Limiter) -> None:
    charges = (Charge(KEY, "key_a", parse_limits("100/minute")), Charge(USER, "alice", parse_limits("2/minute"), True))
    decisions = [limiter.hit_all(charges) for _ in range(4)]
    assert all(d.allowed for d in decisions)
    assert [len(d.observed) for d in decisions] == [0, 0, 1, 1]  # what 2/minute would have refused
    assert decisions[2].observed[0].scope == USER and decisions[2].observed[0].item.amount == 2
    # Never shown to the client: the headers describe the enforced windows only.
    assert {w.scope for d in decisions for w in d.windows} == {KEY}
    assert shown(decisions[-1]).remaining == 96
    # Every limit only observed: nothing to show, nothing refused.
    alone = limiter.hit_all((Charge(KEY, "key_b", parse_limits("1/minute"), True),))
    again = limiter.hit_all((Charge(KEY, "key_b", parse_limits("1/minute"), True),))
    assert alone.shown is None and again.allowed and len(again.observed) == 1


def test_a_route_window_is_apart_from_the_general_ones(limiter: Limiter) -> None:
    general, route = parse_limits("10/minute"), parse_limits("2/minute")
    on_route = (Charge(KEY, "key_a", general), Charge("key:POST /generate", "key_a", route))
    assert [limiter.hit_all(on_route).allowed for _ in range(3)] == [True, True, False]
    denied = limiter.hit_all(on_route)
    assert shown(denied).scope == "key:POST /generate"
    # Off the route the key has its general window, charged only by the two that passed.
    elsewhere = limiter.hit("key_a", general)
    assert elsewhere.allowed and shown(elsewhere).remaining == 7
