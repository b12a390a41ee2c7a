"""Requests the gateway refuses outright, and targets that must not change which host is asked."""

from __future__ import annotations

import json
import socket

import pytest

from tests.conftest import GatewayFactory
from tests.rawhttp import exchange, read_response
from tests.servers import GatewayProcess, ServerProcess, received_ids

MOCKLY_405 = {"error": {"code": "method_not_allowed", "message": "Method TRACE is not allowed"}}


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory({"limits": {"body_idle_timeout": "300ms"}})


def _request(gw: GatewayProcess, start_line: bytes, request_id: str, extra: bytes = b"") -> tuple[int, dict, bytes]:
    head = start_line + b"\r\nHost: x\r\nX-Request-Id: " + request_id.encode() + b"\r\n" + gw.auth_line + extra
    return exchange(gw.port, head + b"\r\n")


def test_trace_is_refused(gw: GatewayProcess, stub: ServerProcess) -> None:
    status, headers, body = _request(gw, b"TRACE /api/v1/templates HTTP/1.1", "trace-1")
    assert status == 405 and json.loads(body) == MOCKLY_405
    assert headers[b"allow"] == b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
    assert headers[b"cache-control"] == b"no-store" and headers[b"connection"] == b"close"
    assert "trace-1" not in received_ids(stub)
    assert gw.access_entry("trace-1")["outcome"] == "method_not_allowed"


@pytest.mark.parametrize("start_line", [b"GET * HTTP/1.1", b"OPTIONS * HTTP/1.1"])
def test_a_target_that_is_not_a_path_is_refused(gw: GatewayProcess, stub: ServerProcess, start_line: bytes) -> None:
    request_id = f"star-{start_line[:3].decode()}"
    status, headers, body = _request(gw, start_line, request_id)
    assert status == 400 and json.loads(body) == {"error": {"code": "bad_request", "message": "Malformed request"}}
    assert headers[b"cache-control"] == b"no-store"
    assert request_id not in received_ids(stub)


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        pytest.param(b"http://other.example/x?q=1", "/x", id="absolute-form"),
        pytest.param(b"http://user@other.example:81/x", "/x", id="absolute-form-with-userinfo"),
        pytest.param(b"//other.example/x", "//other.example/x", id="network-path"),
        pytest.param(b"/%2e%2e/%2F/other.example/../x", "/%2e%2e/%2F/other.example/../x", id="dot-segments-encoded"),
        pytest.param(b"/@other.example/x", "/@other.example/x", id="at-sign"),
    ],
)
def test_no_target_changes_the_host_contacted(
    gw: GatewayProcess, stub: ServerProcess, target: bytes, forwarded: str
) -> None:
    request_id = "target-" + str(abs(hash(target)))
    status, _, body = _request(gw, b"GET " + target + b" HTTP/1.1", request_id)
    assert status == 200
    echoed = json.loads(body)  # the stub's echo: it reached upstream.url and nothing else
    assert echoed["raw_path"] == forwarded
    assert dict(echoed["headers"])["host"] == stub.url.removeprefix("http://")


def test_a_stalled_body_gets_408_and_never_reaches_the_upstream(gw: GatewayProcess, stub: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nX-Request-Id: stalled-body\r\n"
            + gw.auth_line
            + b"Content-Length: 100\r\n\r\n"
            + b"a" * 10
        )
        status, headers, body = read_response(sock)
    assert status == 408
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert headers[b"connection"] == b"close"
    assert "stalled-body" not in received_ids(stub)
    assert gw.access_entry("stalled-body")["outcome"] == "request_timeout"


# Claims about the client or the original request that frameworks behind a proxy believe.
PROXY_CLAIMS = {
    "forwarded": "for=203.0.113.9",
    "x-real-ip": "203.0.113.9",
    "x-forwarded-port": "8443",
    "x-forwarded-prefix": "/admin",
    "x-forwarded-server": "evil.example",
    "x-forwarded-ssl": "on",
    "front-end-https": "on",
    "x-url-scheme": "https",
    "true-client-ip": "203.0.113.9",
    "x-client-ip": "203.0.113.9",
    "cf-connecting-ip": "203.0.113.9",
    "x-original-forwarded-for": "203.0.113.9",
    "x-original-url": "/admin/delete",
    "x-rewrite-url": "/admin/delete",
}


def test_client_claims_about_its_address_are_dropped_unless_the_peer_is_trusted(
    gw: GatewayProcess, gateway_factory: GatewayFactory
) -> None:
    claims = b"".join(f"{name}: {value}\r\n".encode() for name, value in PROXY_CLAIMS.items())
    claims += b"X-Forwarded-For: 203.0.113.9\r\n"
    _, _, body = _request(gw, b"GET /echo HTTP/1.1", "claims-untrusted", claims)
    received = json.loads(body)["headers"]
    assert [name for name, _ in received if name in PROXY_CLAIMS] == []
    assert ["x-forwarded-for", "127.0.0.1"] in received

    behind_proxy = gateway_factory({"proxy": {"trusted_peers": ["127.0.0.1"]}})
    _, _, body = _request(behind_proxy, b"GET /echo HTTP/1.1", "claims-trusted", claims)
    received = json.loads(body)["headers"]
    assert [[name, value] for name, value in received if name in PROXY_CLAIMS] == [
        [name, value] for name, value in PROXY_CLAIMS.items()
    ]
    assert ["x-forwarded-for", "203.0.113.9, 127.0.0.1"] in received
