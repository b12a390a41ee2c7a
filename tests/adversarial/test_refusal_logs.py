"""The access log of requests the HTTP protocol refuses before they are handled (431, 400, 408)
keeps the path of their target and nothing else: no query string, no user information."""

from __future__ import annotations

import json

import pytest

from tests.conftest import GatewayFactory
from tests.rawhttp import connect, read_response
from tests.servers import GatewayProcess

TARGETS = {
    "origin-form": b"/x?api_key=SECRET",
    "absolute-form": b"http://user:PASSWORD@h/x?api_key=SECRET",
}
# What follows the request line, and the status it is refused with.
REFUSALS = {
    "too-many-headers": (b"Host: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(11)) + b"\r\n", 431),
    "head-too-large": (b"Host: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431),
    "unparseable": (b"Host: x\r\nX\x01A: 1\r\n\r\n", 400),
    "slow-head": (b"Host: x\r\n", 408),  # never finished: refused at limits.head_timeout
}


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory({"limits": {"max_header_bytes": "4KiB", "max_headers": 10, "head_timeout": "300ms"}})


@pytest.mark.parametrize("refusal", list(REFUSALS))
@pytest.mark.parametrize("target", list(TARGETS))
def test_a_refused_request_is_logged_without_its_query_or_credentials(
    gw: GatewayProcess, target: str, refusal: str
) -> None:
    rest, expected = REFUSALS[refusal]
    with connect(gw.port) as sock:
        sock.sendall(b"GET " + TARGETS[target] + b" HTTP/1.1\r\n" + rest)
        status, headers, _ = read_response(sock)
    assert status == expected
    entry = gw.access_entry(headers[b"x-request-id"].decode())
    assert entry["status"] == expected
    line = json.dumps(entry)
    assert "SECRET" not in line and "PASSWORD" not in line, line
    assert entry["path"] == "/x"


@pytest.mark.parametrize("with_key", [False, True], ids=["no-key", "key"])
def test_a_body_refused_before_the_request_was_handled_is_logged_as_answered(
    gw: GatewayProcess, with_key: bool
) -> None:
    request_id = f"bad-chunk-{'key' if with_key else 'none'}"
    # Head and bad chunk in one piece: the body is refused before the proxy has even looked at it.
    data = (
        b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + f"X-Request-Id: {request_id}\r\n".encode()
        + (gw.auth_line if with_key else b"")
        + b"\r\nzz\r\nabc\r\n0\r\n\r\n"
    )
    with connect(gw.port) as sock:
        sock.sendall(data)
        status, headers, body = read_response(sock)
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"
    assert headers[b"x-request-id"] == request_id.encode()  # the client's own id, as on every answer
    entry = gw.access_entry(request_id)
    assert (entry["status"], entry["outcome"]) == (400, "bad_request")
