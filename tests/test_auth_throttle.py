from __future__ import annotations

from gateway.auth_throttle import FailureThrottle
from gateway.ratelimit import parse_limits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_throttled_for_the_rest_of_its_window() -> None:
    clock = Clock()
    throttle = FailureThrottle(parse_limits("2/minute")[0], clock=clock)
    throttle.failed("a")
    assert throttle.retry_after("a") is None
    clock.now += 10
    throttle.failed("a")
    assert throttle.retry_after("a") == 50  # the window opened at the first failure
    assert throttle.retry_after("b") is None
    clock.now += 50
    assert throttle.retry_after("a") is None
    assert len(throttle) == 0  # a closed window is forgotten


def test_memory_is_bounded() -> None:
    clock = Clock()
    throttle = FailureThrottle(parse_limits("1/minute")[0], clock=clock, max_addresses=3)
    for address in "abcd":
        throttle.failed(address)
    assert len(throttle) == 3 and throttle.retry_after("d") is None  # untracked: all windows open
    clock.now += 60
    throttle.failed("d")  # the closed windows are swept to make room
    assert len(throttle) == 1 and throttle.retry_after("d") == 60
