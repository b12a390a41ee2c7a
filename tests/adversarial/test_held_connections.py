"""Connections a client would keep open for nothing: the rest of an upload the gateway has already
refused, and an idle connection after a complete answer."""

from __future__ import annotations

import socket
import time

from tests.conftest import GatewayFactory
from tests.rawhttp import connect, is_closed, read_response

PACE = 0.2  # seconds between the bytes of a deliberately slow upload


def _trickle_until_closed(sock: socket.socket, limit: float) -> float | None:
    """Send a byte every PACE seconds until the gateway closes the connection: how long that took,
    or None if it was still open after ``limit`` seconds."""
    started = time.monotonic()
    sock.settimeout(PACE)  # the wait for the gateway's close is the pacing of the upload
    for _ in range(int(limit / PACE)):
        try:
            sock.sendall(b"a")
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            break
    return None


def test_the_rest_of_a_refused_upload_is_not_waited_for(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    with connect(gw.port) as sock:
        # No key: refused before the body is read, and the body never comes but a byte at a time.
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        status, headers, _ = read_response(sock)
        held_for = _trickle_until_closed(sock, limit=10.0)
    assert status == 401
    assert held_for is not None, "the gateway kept the connection of a refused upload open for 10 s"
    assert headers.get(b"connection") == b"close"


def test_an_idle_connection_is_closed_after_the_keepalive_timeout(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"limits": {"keepalive_timeout": "1s"}})
    with connect(gw.port) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"\r\n")
        assert read_response(sock)[0] == 200
        idle_since = time.monotonic()
        assert not is_closed(sock, timeout=0.5), "closed at once: a kept-alive connection must stay open a while"
        assert is_closed(sock, timeout=3), "an idle connection outlived limits.keepalive_timeout by far"
        assert time.monotonic() - idle_since < 3
