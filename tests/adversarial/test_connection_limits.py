"""Slow and idle connections, and the connection cap, against a gateway with short limits."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import httpx
import pytest

from gateway.http.protocol import MAX_PIPELINE
from tests.conftest import GatewayFactory
from tests.rawhttp import connect, is_closed, read_response, read_responses
from tests.servers import GatewayProcess


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory({"limits": {"head_timeout": "500ms"}})


def test_a_slow_head_gets_408(gw: GatewayProcess) -> None:
    with connect(gw.port) as sock:
        sock.sendall(b"GET /slow-head HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answers = read_responses(sock)
        assert [status for status, _, _ in answers] == [408]
        assert json.loads(answers[0][2])["error"]["code"] == "request_timeout"
        assert is_closed(sock)
        assert time.monotonic() - started < 5


def test_a_head_trickling_in_still_gets_408(gw: GatewayProcess) -> None:
    with connect(gw.port) as sock:
        sock.sendall(b"GET /trickle HTTP/1.1\r\n")
        # A byte at a time keeps the connection busy but must not keep it alive (slow loris).
        with contextlib.suppress(OSError):
            for _ in range(30):
                sock.sendall(b"X")
                time.sleep(0.05)
        assert [status for status, _, _ in read_responses(sock)] == [408]


def test_a_silent_connection_is_closed(gw: GatewayProcess) -> None:
    with connect(gw.port) as sock:
        assert is_closed(sock, timeout=5)


def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_head(gw: GatewayProcess) -> None:
    with connect(gw.port) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"\r\n")
        assert [status for status, _, _ in read_responses(sock)] == [200]
        sock.sendall(b"GET /second HTTP/1.1\r\n")
        assert [status for status, _, _ in read_responses(sock)] == [408]


def test_connections_beyond_the_cap_get_503(gateway_factory: GatewayFactory) -> None:
    capped = gateway_factory({"limits": {"max_connections": 3}})
    with contextlib.ExitStack() as held:
        for _ in range(3):
            held.enter_context(connect(capped.port)).sendall(b"GET /held HTTP/1.1\r\n")
        with connect(capped.port) as extra:
            answers = read_responses(extra)
            assert [status for status, _, _ in answers] == [503]
            assert answers[0][1][b"retry-after"] == b"1"
            assert json.loads(answers[0][2])["error"]["code"] == "service_unavailable"
    # Once they are closed, new connections are served again.
    deadline = time.monotonic() + 10
    while httpx.get(f"{capped.url}/x", headers=capped.auth).status_code != 200:
        assert time.monotonic() < deadline


def test_one_address_cannot_take_every_connection(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"limits": {"max_connections_per_address": 3}})
    with contextlib.ExitStack() as held:
        idle = [held.enter_context(connect(gw.port)) for _ in range(3)]
        assert not any(is_closed(sock, timeout=0.2) for sock in idle)
        status, _, body = read_response(held.enter_context(connect(gw.port)))
        assert status == 503 and json.loads(body)["error"]["code"] == "service_unavailable"
        # Another address is served meanwhile.
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10, source_address=("127.0.0.2", 0)) as other:
            other.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"\r\n")
            assert read_response(other)[0] == 200


def test_a_deep_pipeline_is_cut_short(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    request = b"GET /x HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"\r\n"
    with connect(gw.port) as sock:
        sock.sendall(request * 200)  # in one write: the gateway reads them together
        answers = read_responses(sock, 200)
        closed = is_closed(sock)
    # The one being answered and MAX_PIPELINE waiting behind it are answered, then the one refused;
    # then the connection closes.
    assert [status for status, _, _ in answers] == [200] * (1 + MAX_PIPELINE) + [400]
    assert closed
