"""The limiter on its in-memory storage, with an injected clock (no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import RateLimitHeaders
from gateway.ratelimit import CompactMemoryStorage, Limiter, parse_limits, quotas
from gateway.ratelimit_headers import RateLimitHeaderWriter


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def storage(clock: Clock) -> CompactMemoryStorage:
    return CompactMemoryStorage(clock=clock)


@pytest.fixture
def limiter(storage: CompactMemoryStorage, clock: Clock) -> Limiter:
    return Limiter(storage, clock=clock)


async def test_fixed_window_opens_at_the_first_request(limiter: Limiter, clock: Clock) -> None:
    """The Mockupanda behaviour: the whole allowance early in the window, then nothing until it ends."""
    key = quotas("key_a", parse_limits("100/minute"))
    for second in range(100):
        clock.now = 1_700_000_000.0 + second * 0.3  # 100 requests in the first 30 s
        assert (await limiter.hit(key)).allowed
    clock.now = 1_700_000_059.9
    denied = await limiter.hit(key)
    assert not denied.allowed
    assert limiter.retry_after(denied.shown) == 1
    clock.now = 1_700_000_060.0
    assert (await limiter.hit(key)).allowed


async def test_a_denied_request_is_charged_to_no_window(limiter: Limiter, clock: Clock) -> None:
    key = quotas("key_b", parse_limits("5/minute;8/day"))
    results = [await limiter.hit(key) for _ in range(7)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 2
    assert [w.remaining for w in results[-1].windows] == [0, 3]  # the day was charged 5, not 7
    clock.now += 60
    results = [await limiter.hit(key) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    denied = results[-1]
    assert denied.shown.item.get_expiry() == 86400  # the day denied it
    assert limiter.retry_after(denied.shown) == 86400 - 60


async def test_exact_under_concurrency(limiter: Limiter) -> None:
    key = quotas("key_c", parse_limits("20/minute;30/hour"))
    results = await asyncio.gather(*(limiter.hit(key) for _ in range(60)))
    assert sum(r.allowed for r in results) == 20


async def test_the_window_shown(limiter: Limiter, clock: Clock) -> None:
    key = quotas("key_d", parse_limits("3/minute;10/day"))
    first = await limiter.hit(key)
    assert first.shown.item.get_expiry() == 60 and first.shown.remaining == 2  # fewest remaining
    tie = quotas("key_e", parse_limits("5/minute;5/day"))
    assert (await limiter.hit(tie)).shown.item.get_expiry() == 86400  # a tie: the later reset


async def test_memory_follows_active_keys(storage: CompactMemoryStorage, limiter: Limiter, clock: Clock) -> None:
    items = parse_limits("10/second")
    for i in range(5000):
        await limiter.hit(quotas(f"key_{i}", items))
    assert len(storage) <= 5000
    clock.now += 2
    for i in range(5000):  # new keys: the old windows, expired, are swept out on the way
        await limiter.hit(quotas(f"other_{i}", items))
    assert len(storage) <= 5000 + CompactMemoryStorage.MIN_SWEEP_INTERVAL


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
    decision = await limiter.hit(quotas("key_f", parse_limits("3/minute;10/day")))
    headers = RateLimitHeaderWriter(mode).headers(decision, clock())
    assert {name.decode(): value.decode() for name, value in headers} == expected


async def test_both_header_sets(limiter: Limiter, clock: Clock) -> None:
    decision = await limiter.hit(quotas("key_g", parse_limits("5/2minutes")))
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
