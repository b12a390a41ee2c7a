"""The verifier's verdict cache on its own, with a fake timer: lifetimes, bounds and order."""

from __future__ import annotations

import random

import pytest

from gateway.auth.verdicts import Identity, Verdict, VerdictCache
from tests.fakes import Clock


def good(n: int = 0) -> Verdict:
    return Verdict(identity=Identity(user_id=f"user_{n}", key_id=f"key_{n}"))


def digest(n: int) -> bytes:
    return n.to_bytes(32, "big")


@pytest.fixture
def cache(clock: Clock) -> VerdictCache:
    return VerdictCache(max_entries=100, ttl=60, timer=clock)


def test_a_verdict_is_fresh_for_the_ttl_then_only_known(cache: VerdictCache, clock: Clock) -> None:
    verdict = good()
    cache.put(digest(1), verdict)
    clock.tick(59.9)
    assert cache.fresh(digest(1)) is verdict
    clock.tick(0.1)
    assert cache.fresh(digest(1)) is None
    assert cache.last_known(digest(1)) is verdict  # kept past the TTL for a store that cannot be read
    assert cache.found_good(digest(1))
    assert cache.fresh(digest(2)) is None and cache.last_known(digest(2)) is None
    assert not cache.found_good(digest(2))


def test_expire_all_keeps_what_is_known(cache: VerdictCache) -> None:
    cache.put(digest(1), good())
    cache.expire_all()
    assert cache.fresh(digest(1)) is None
    assert cache.last_known(digest(1)) is not None
    fresh_again = good()
    cache.put(digest(1), fresh_again)
    assert cache.fresh(digest(1)) is fresh_again


def test_forget_all_keeps_only_which_keys_were_found_good(cache: VerdictCache) -> None:
    cache.put(digest(1), good())
    cache.put(digest(2), Verdict(identity=None))
    cache.put(digest(3), Verdict(identity=Identity("user_3", "key_3"), revoked=True))
    cache.forget_all()
    for n in (1, 2, 3):
        assert cache.fresh(digest(n)) is None
        assert cache.last_known(digest(n)) is None
    assert cache.found_good(digest(1))
    assert not cache.found_good(digest(2))  # an unknown key
    assert not cache.found_good(digest(3))  # a revoked one


def test_a_key_read_again_as_revoked_is_no_longer_found_good(cache: VerdictCache) -> None:
    cache.put(digest(1), good())
    cache.forget_all()
    cache.put(digest(1), Verdict(identity=Identity("user_1", "key_1"), revoked=True))
    assert not cache.found_good(digest(1))
    assert cache.last_known(digest(1)) is not None


def test_the_oldest_read_go_first_when_full(clock: Clock) -> None:
    cache = VerdictCache(max_entries=32, ttl=60, timer=clock)  # evicts 2 at a time
    for n in range(32):
        cache.put(digest(n), good(n))
    cache.put(digest(0), good(0))  # read again: now the newest
    cache.put(digest(32), good(32))  # full: the two oldest reads (1 and 2) go
    assert len(cache) == 31
    assert cache.fresh(digest(0)) is not None
    assert cache.last_known(digest(1)) is None and cache.last_known(digest(2)) is None
    assert all(cache.fresh(digest(n)) is not None for n in range(3, 33))


@pytest.mark.parametrize("max_entries", [1, 2, 17, 1000])
def test_never_holds_more_than_max_entries(clock: Clock, max_entries: int) -> None:
    cache = VerdictCache(max_entries=max_entries, ttl=60, timer=clock)
    rng = random.Random(max_entries)
    for _ in range(20 * max_entries + 50):
        n = rng.randrange(3 * max_entries + 3)
        verdict = good(n)
        cache.put(digest(n), verdict)
        assert len(cache) <= max_entries
        assert cache.fresh(digest(n)) is verdict  # what was just read is always there
    # Evicting makes room for a sixteenth at a time, no more.
    assert len(cache) > max_entries - max(1, max_entries // 16)


def test_verdicts_read_before_a_change_are_not_made_fresh_by_the_next_reads(cache: VerdictCache) -> None:
    cache.put(digest(1), good(1))
    cache.expire_all()
    cache.put(digest(2), good(2))
    assert cache.fresh(digest(1)) is None
    assert cache.fresh(digest(2)) is not None


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        VerdictCache(max_entries=0, ttl=1)
