"""Connections a client would keep open for nothing: the rest of an upload the gateway has already
refused, and an answer nobody reads. (Idle connections and slow heads: test_protocol_deadlines.py.)"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

from tests.conftest import GatewayFactory
from tests.rawhttp import connect, read_response
from tests.servers import GatewayProcess

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


def _download_never_read(gw: GatewayProcess, size: int, request_id: str) -> socket.socket:
    """A connection that asks for ``size`` bytes and never reads them (a small receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", gw.port))
    sock.sendall(
        f"GET /__stub/bytes/{size} HTTP/1.1\r\nHost: x\r\nX-Request-Id: {request_id}\r\n".encode()
        + gw.auth_line
        + b"\r\n"
    )
    return sock


def test_a_client_that_takes_none_of_its_answer_is_disconnected(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"limits": {"send_timeout": "1s"}})
    # The gateway's writes stall almost at once.
    with _download_never_read(gw, 67108864, "never-reads") as sock:
        # The answer is abandoned, and the upstream request with it, once no byte has left for 1 s.
        entry = gw.access_entry("never-reads", timeout=20)
        assert (entry["status"], entry["outcome"]) == (200, "client_closed")  # cut off midway
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
    assert received < 67108864


def test_a_refused_upload_can_read_its_answer_while_still_sending(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"limits": {"max_body_bytes": "1MiB"}})
    with connect(gw.port) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 8388608\r\n" + gw.auth_line + b"\r\n")
        # Some of the body goes out after the head, as a client that does not wait for an answer
        # sends it; the 413 must not be lost to a reset of a connection with unread bytes.
        sock.sendall(bytes(256 * 1024))
        status, headers, body = read_response(sock)
    assert status == 413 and headers.get(b"connection") == b"close"
    assert b"validation_failed" in body


def test_an_answer_left_unread_in_the_kernel_still_meets_the_send_deadline(gateway_factory: GatewayFactory) -> None:
    # One connection per address: a second one is served only once the gateway has let go of the first.
    # (2 s: long enough that the second connection comes before it, on a busy machine too.)
    gw = gateway_factory({"limits": {"send_timeout": "2s", "max_connections_per_address": 1}})
    # An answer that the kernel's send buffer can hold (loopback grows it up to the largest
    # tcp_wmem), never read: the gateway's own write buffer drains, so only the kernel knows the
    # client stopped.
    largest_send_buffer = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    with _download_never_read(gw, largest_send_buffer // 2, "unread-tail"):
        entry = gw.access_entry("unread-tail", timeout=20)
        assert entry["outcome"] == "forwarded"  # answered, as far as the gateway's transport knows
        statuses = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with connect(gw.port) as other:
                other.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"\r\n")
                statuses.append(read_response(other)[0])
            if statuses[-1] != 503:
                break
            time.sleep(0.2)  # the pace of a client trying again
    assert statuses[0] == 503  # the unread connection was held at first...
    assert statuses[-1] == 200, "... and for ever: the gateway kept a connection nobody reads from"
