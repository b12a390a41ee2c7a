"""Header bytes across the gateway: no lookalike of a header the gateway writes itself reaches the
upstream, and bytes beyond ASCII cross both ways exactly as sent."""

from __future__ import annotations

import json

import pytest

from tests.adversarial.fake_upstream import UTF8_VALUE, FakeUpstream, header
from tests.conftest import GatewayFactory
from tests.rawhttp import exchange
from tests.servers import GatewayProcess

# Spellings with "_" or "." that some servers and frameworks read as the gateway's own headers.
LOOKALIKES = [
    b"X_Forwarded_For",
    b"x.forwarded.for",
    b"X_Real_IP",
    b"x-real_ip",
    b"X_Forwarded_Host",
    b"X_Forwarded_Proto",
    b"X_Request_Id",
]


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory, upstream: FakeUpstream) -> GatewayProcess:
    return gateway_factory({"upstream": {"url": upstream.url, "read_timeout": "2s"}})


def test_lookalikes_of_the_forwarding_headers_never_reach_the_upstream(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()  # in front of the stub, whose echo shows every header it received
    claims = b"".join(name + b": 203.0.113.9\r\n" for name in LOOKALIKES)
    head = b"GET /__stub/echo HTTP/1.1\r\nHost: real.example\r\nX-Request-Id: lookalikes\r\n" + gw.auth_line + claims
    status, _, body = exchange(gw.port, head + b"\r\n")
    assert status == 200
    received = json.loads(body)["headers"]
    assert [name for name, _ in received if name.encode() in {n.lower() for n in LOOKALIKES}] == []
    assert ["x-forwarded-for", "127.0.0.1"] in received
    assert ["x-forwarded-host", "real.example"] in received and ["x-forwarded-proto", "http"] in received
    assert [value for name, value in received if name == "x-request-id"] == ["lookalikes"]
    assert "203.0.113.9" not in body.decode()


def test_request_header_bytes_beyond_ascii_reach_the_upstream_unchanged(
    gw: GatewayProcess, upstream: FakeUpstream
) -> None:
    head = (
        b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Request-Id: utf8-request\r\nX-Utf8: " + UTF8_VALUE + b"\r\n" + gw.auth_line
    )
    status, _, _ = exchange(gw.port, head + b"\r\n")
    assert status == 200
    with upstream.recording.received:
        heads = [h for h in upstream.recording.heads if header(h, b"x-request-id") == b"utf8-request"]
    assert [header(h, b"x-utf8") for h in heads] == [UTF8_VALUE]


def test_response_header_bytes_beyond_ascii_reach_the_client_unchanged(gw: GatewayProcess) -> None:
    status, headers, _ = exchange(gw.port, b"GET /utf8-header HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"\r\n")
    assert status == 200
    assert headers[b"x-utf8"] == UTF8_VALUE
