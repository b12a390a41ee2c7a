"""SIGTERM: requests in flight finish, new connections are refused, usage is written, and a
restart on the same store loses nothing."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import time

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.rawhttp import connect, read_responses
from tests.servers import GatewayProcess, cli_json


def test_sigterm_finishes_what_is_in_flight(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"usage": {"flush_seconds": "1h"}})  # only shutdown writes usage
    revoked = cli_json(gw, "keys", "create", "--user", gw.user_id)
    cli_json(gw, "keys", "revoke", revoked["id"])
    assert httpx.get(f"{gw.url}/x", headers=gw.auth).status_code == 200
    body = b"b" * 100_000
    with connect(gw.port) as sock:
        sock.sendall(
            b"POST /in-flight HTTP/1.1\r\nHost: x\r\n"
            + gw.auth_line
            + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        # "100 Continue" comes once the gateway has authenticated the request and asks for its body.
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        gw.process.send_signal(signal.SIGTERM)
        assert gw.wait_for_log("shutting down process")
        # Logged as the signal arrives; uvicorn closes its listening socket soon after: wait for it.
        deadline = time.monotonic() + 5
        # Refused once it is closed; reset if it closes with this connection in its backlog.
        with pytest.raises((ConnectionRefusedError, ConnectionResetError)):
            while time.monotonic() < deadline:
                socket.create_connection(("127.0.0.1", gw.port), timeout=5).close()
        sock.sendall(body)
        [(status, _, answer)] = read_responses(sock)
    assert status == 200
    assert json.loads(answer)["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert gw.process.wait(timeout=30) in (0, -signal.SIGTERM)
    # Both requests were counted and written at shutdown.
    assert cli_json(gw, "keys", "show", gw.key_id)["requests"] == 2

    restarted = GatewayProcess.restart(gw)
    try:
        assert httpx.get(f"{restarted.url}/x", headers=gw.auth).status_code == 200
        revoked_auth = {"Authorization": f"Bearer {revoked['key']}"}
        assert httpx.get(f"{restarted.url}/x", headers=revoked_auth).status_code == 401
    finally:
        restarted.stop()


def test_ctrl_c_then_sigterm_is_one_graceful_stop(gateway_factory: GatewayFactory) -> None:
    # A terminal's Ctrl-C, then a script's or a service manager's SIGTERM: the usage is still written.
    gw = gateway_factory({"usage": {"flush_seconds": "1h"}})  # only shutdown writes usage
    for _ in range(3):
        assert httpx.get(f"{gw.url}/x", headers=gw.auth).status_code == 200
    gw.process.send_signal(signal.SIGINT)
    assert gw.wait_for_log("shutting down process")
    gw.process.send_signal(signal.SIGTERM)
    assert gw.process.wait(timeout=30) in (0, -signal.SIGINT, -signal.SIGTERM)
    assert "Traceback" not in gw.log
    assert cli_json(gw, "keys", "show", gw.key_id)["requests"] == 3
