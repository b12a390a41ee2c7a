from __future__ import annotations

from gateway.auth.throttle import LookupThrottle
from gateway.units import parse_limits
from tests.fakes import Clock


def test_an_address_is_throttled_for_the_rest_of_its_window(clock: Clock) -> None:
    throttle = LookupThrottle(parse_limits("2/minute")[0], clock=clock)
    assert throttle.reserve("a") is None
    clock.tick(10)
    assert throttle.reserve("a") is None
    assert throttle.reserve("a") == 50  # the window opened at the first look-up
    assert throttle.reserve("b") is None
    clock.tick(50)
    assert throttle.reserve("a") is None  # a new window


def test_a_look_up_that_finds_a_good_key_is_given_back(clock: Clock) -> None:
    throttle = LookupThrottle(parse_limits("1/minute")[0], clock=clock)
    for _ in range(5):
        assert throttle.reserve("a") is None
        throttle.refund("a")
    assert throttle.reserve("a") is None
    assert throttle.reserve("a") == 60


def test_memory_is_bounded(clock: Clock) -> None:
    throttle = LookupThrottle(parse_limits("1/minute")[0], clock=clock, max_addresses=3)
    for address in "abc":
        throttle.reserve(address)
    assert throttle.reserve("d") is None and throttle.reserve("d") is None  # untracked: never throttled
    assert len(throttle) == 3
    clock.tick(60)
    assert throttle.reserve("d") is None  # the closed windows are swept to make room
    assert len(throttle) == 1 and throttle.reserve("d") == 60
