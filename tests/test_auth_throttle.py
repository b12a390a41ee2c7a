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


def test_memory_is_bounded_and_a_full_table_switches_no_throttle_off(clock: Clock) -> None:
    throttle = LookupThrottle(parse_limits("2/minute")[0], clock=clock, max_addresses=3)
    for address in "abc":
        throttle.reserve(address)
    # Full of open windows: newcomers share one window of the same limit.
    assert throttle.reserve("d") is None and throttle.reserve("e") is None
    assert throttle.reserve("f") == 60 and throttle.reserve("d") == 60
    assert len(throttle) == 4  # the three, and the newcomers' one
    clock.tick(60)
    assert throttle.reserve("d") is None  # the closed windows are swept to make room
    assert len(throttle) == 1
    assert throttle.reserve("d") is None and throttle.reserve("d") == 60  # its own window now


def test_an_ipv6_network_is_one_client(clock: Clock) -> None:
    throttle = LookupThrottle(parse_limits("2/minute")[0], clock=clock)
    assert throttle.reserve("2001:db8:1:2::1") is None
    assert throttle.reserve("2001:db8:1:2:ffff::9") is None
    assert throttle.reserve("2001:db8:1:2:abcd::1") == 60  # the same /64
    assert throttle.reserve("2001:db8:1:3::1") is None  # another network
    assert throttle.reserve("192.0.2.1") is None and throttle.reserve("192.0.2.2") is None


def test_an_ipv4_client_on_a_dual_stack_socket_is_itself(clock: Clock) -> None:
    throttle = LookupThrottle(parse_limits("1/minute")[0], clock=clock)
    assert throttle.reserve("::ffff:198.51.100.7") is None
    assert throttle.reserve("::ffff:198.51.100.7") == 60
    assert throttle.reserve("::ffff:203.0.113.50") is None  # another client, not the same "::" /64
    assert throttle.reserve("198.51.100.7") == 60  # the same client, however its address is written
