"""Request framing and smuggling, over raw sockets: each malformed request is refused with 400
(431 for an oversized head) and the connection closed, and nothing of it reaches the upstream."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import GatewayFactory
from tests.rawhttp import connect, exchange_all as exchange, is_closed, read_responses
from tests.servers import GatewayProcess, ServerProcess, received_paths

KEY = b"@KEY@"  # replaced by "Authorization: Bearer <key>\r\n"

POST = b"POST /f-{n} HTTP/1.1\r\nHost: x\r\n@KEY@"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"

# name -> the bytes sent; every case uses the path /f-<name> and smuggles /s-<name> where it can.
MALFORMED: dict[str, bytes] = {
    "cl-and-te": POST + b"Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /s-{n} HTTP/1.1\r\nHost: x\r\n\r\n",
    "te-and-cl": POST + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
    b"5c\r\nGET /s-{n} HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n",
    "two-content-lengths": POST + b"Content-Length: 0\r\nContent-Length: 36\r\n\r\n"
    b"GET /s-{n} HTTP/1.1\r\nHost: x\r\n\r\n",
    "content-length-list": POST + b"Content-Length: 0, 36\r\n\r\nGET /s-{n} HTTP/1.1\r\n\r\n",
    "content-length-sign": POST + b"Content-Length: +3\r\n\r\nabc",
    "content-length-negative": POST + b"Content-Length: -1\r\n\r\n",
    "content-length-hex": POST + b"Content-Length: 0x10\r\n\r\n",
    "content-length-space-inside": POST + b"Content-Length: 1 0\r\n\r\n",
    "te-unknown": POST + b"Transfer-Encoding: gzip\r\n\r\n",
    "te-chunked-not-last": POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te-xchunked": POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-space-before-colon": POST + b"Transfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    "te-folded": POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "chunk-size-not-hex": CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": CHUNKED + b"10000000000000000000001\r\na\r\n0\r\n\r\n",
    "chunk-without-crlf": CHUNKED + b"3\r\nabcX0\r\n\r\n",
    "chunk-bare-lf": CHUNKED + b"3\nabc\n0\n\n",
    "bare-lf-head": b"GET /f-{n} HTTP/1.1\nHost: x\n@KEY@\n",
    "bare-cr-in-header": b"GET /f-{n} HTTP/1.1\r\nHost: x\r\n@KEY@X-A: 1\rX-B: 2\r\n\r\n",
    "nul-in-value": b"GET /f-{n} HTTP/1.1\r\nHost: x\r\n@KEY@X-A: a\x00b\r\n\r\n",
    "control-in-name": b"GET /f-{n} HTTP/1.1\r\nHost: x\r\n@KEY@X\x01A: 1\r\n\r\n",
    "space-in-name": b"GET /f-{n} HTTP/1.1\r\nHost: x\r\n@KEY@X A: 1\r\n\r\n",
    "duplicate-host": b"GET /f-{n} HTTP/1.1\r\nHost: x\r\nHost: y\r\n@KEY@\r\n",
    # It would reach the upstream as X-Forwarded-Host (a reset-link or cache-key poisoning).
    "host-not-a-host": b"GET /f-{n} HTTP/1.1\r\nHost: evil.example/x?y@z w\r\n@KEY@\r\n",
    "host-with-space": b"GET /f-{n} HTTP/1.1\r\nHost: good.example evil.example\r\n@KEY@\r\n",
    "http-version-garbage": b"GET /f-{n} HTTP/1.x\r\nHost: x\r\n@KEY@\r\n",
    "control-in-target": b"GET /f-{n}\x7f HTTP/1.1\r\nHost: x\r\n@KEY@\r\n",
}


# What uvicorn's h11 parser (h11 0.16) lets through that the shipped httptools protocol refuses:
# Content-Length beside Transfer-Encoding (RFC 9112 lets a server ignore it; a proxy must not),
# obsolete line folding, bare LF line ends, and a Host that is no host. Any of them can make the
# upstream, or a proxy in between, frame the request differently from the gateway.
H11_ACCEPTS = {
    "cl-and-te",
    "te-and-cl",
    "te-folded",
    "chunk-bare-lf",
    "bare-lf-head",
    "host-not-a-host",
    "host-with-space",
}


@pytest.fixture(scope="module", params=["gateway", "h11"])
def gw(gateway_factory: GatewayFactory, request: pytest.FixtureRequest) -> GatewayProcess:
    settings = {"limits": {"max_header_bytes": "4KiB", "max_headers": 20}}
    return gateway_factory(settings, parser=request.param)


def shipped(gw: GatewayProcess) -> bool:
    return gw.parser == "gateway"


@pytest.fixture
def shipped_only(gw: GatewayProcess) -> None:
    if not shipped(gw):
        pytest.skip("the head limits are the gateway's own protocol's (with h11, uvicorn allows 16 KiB)")


def _bytes(gw: GatewayProcess, template: bytes, name: str) -> bytes:
    return template.replace(b"{n}", name.encode()).replace(KEY, gw.auth_line)


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_requests_are_refused(gw: GatewayProcess, stub: ServerProcess, name: str) -> None:
    if not shipped(gw) and name in H11_ACCEPTS:
        pytest.xfail("uvicorn's h11 parser accepts this; the gateway ships httptools")
    answers, closed = exchange(gw.port, _bytes(gw, MALFORMED[name], name))
    assert [status for status, _, _ in answers] == [400]
    status, headers, body = answers[0]
    assert closed
    if shipped(gw):
        assert json.loads(body) == {"error": {"code": "bad_request", "message": "Malformed request"}}
        assert headers[b"cache-control"] == b"no-store" and headers[b"connection"] == b"close"
    reached = received_paths(stub)
    assert f"/f-{name}" not in reached and f"/s-{name}" not in reached


def test_a_pipelined_request_is_authenticated_on_its_own(gw: GatewayProcess, stub: ServerProcess) -> None:
    first = b"GET /f-pipelined-1 HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"\r\n"
    second = b"GET /f-pipelined-2 HTTP/1.1\r\nHost: x\r\n\r\n"
    third = b"GET /f-pipelined-3 HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"Connection: close\r\n\r\n"
    answers, closed = exchange(gw.port, first + second + third, count=3)
    assert [status for status, _, _ in answers] == [200, 401, 200]
    assert closed
    reached = received_paths(stub)
    assert "/f-pipelined-1" in reached and "/f-pipelined-2" not in reached and "/f-pipelined-3" in reached


@pytest.mark.usefixtures("shipped_only")
def test_a_head_over_the_byte_limit_gets_431(gw: GatewayProcess, stub: ServerProcess) -> None:
    head = b"GET /f-big-head HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"X-Big: " + b"a" * 5000 + b"\r\n\r\n"
    answers, closed = exchange(gw.port, head)
    assert [status for status, _, _ in answers] == [431] and closed
    assert json.loads(answers[0][2])["error"]["code"] == "headers_too_large"
    assert "/f-big-head" not in received_paths(stub)


@pytest.mark.usefixtures("shipped_only")
def test_a_head_under_the_limit_arriving_in_pieces_is_served(gw: GatewayProcess) -> None:
    headers = b"".join(b"X-H%02d: %s\r\n" % (i, b"a" * 200) for i in range(15))
    head = b"GET /f-pieces HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + headers + b"\r\n"
    assert 3000 < len(head) < 4096
    with connect(gw.port) as sock:
        for start in range(0, len(head), 100):
            sock.sendall(head[start : start + 100])
            time.sleep(0.001)  # separate segments, as a slow network delivers them
        assert [status for status, _, _ in read_responses(sock)] == [200]


@pytest.mark.usefixtures("shipped_only")
def test_too_many_headers_get_431(gw: GatewayProcess, stub: ServerProcess) -> None:
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(21))
    answers, closed = exchange(gw.port, b"GET /f-many HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + many + b"\r\n")
    assert [status for status, _, _ in answers] == [431] and closed


@pytest.mark.usefixtures("shipped_only")
def test_an_endless_header_is_cut_off_at_the_limit(gw: GatewayProcess) -> None:
    with connect(gw.port) as sock:
        sock.sendall(b"GET /f-endless HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = 0
        try:
            # Far past the limit, in pieces, never ending the line: the gateway must answer
            # and close instead of buffering it all.
            while sent < 1024 * 1024:
                sock.sendall(b"a" * 1024)
                sent += 1024
        except (BrokenPipeError, ConnectionResetError):
            pass
        answers = read_responses(sock)
        assert [status for status, _, _ in answers] == [431]
        assert is_closed(sock)
