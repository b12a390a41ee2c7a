"""Requests that could leave an upstream connection expecting bytes the gateway never sends, so that
the next request on it is read as the end of this one and a request hidden in its body as a request
of its own. Against the recording fake upstream, whose ``/early`` answers before reading the body."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.adversarial.fake_upstream import FakeUpstream, header
from tests.conftest import GatewayFactory
from tests.rawhttp import connect, exchange, is_closed, read_response, read_responses
from tests.servers import GatewayProcess

# Every test here runs with each upstream client: the default and aiohttp.
UPSTREAM_CLIENTS = ("builtin", "aiohttp")

# A complete request for another user, hidden in a request body.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\nX-User-Id: bob\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory, upstream: FakeUpstream) -> GatewayProcess:
    return gateway_factory(
        {"upstream": {"url": upstream.url, "read_timeout": "1s"}, "limits": {"body_idle_timeout": "1s"}}
    )


def _heads_since(upstream: FakeUpstream, before: int) -> list[bytes]:
    with upstream.recording.received:
        return upstream.recording.heads[before:]


def _carrier(gw: GatewayProcess, request_id: bytes) -> bytes:
    """An authenticated POST to /body whose body is the smuggled request."""
    return (
        b"POST /body HTTP/1.1\r\nHost: x\r\nX-Request-Id: "
        + request_id
        + b"\r\n"
        + gw.auth_line
        + b"Content-Length: %d\r\n\r\n" % len(SMUGGLED)
        + SMUGGLED
    )


def test_an_upgrade_with_a_declared_body_cannot_smuggle_a_request(gw: GatewayProcess, upstream: FakeUpstream) -> None:
    # The length the attacker declares: exactly the head the gateway forwards for the next
    # request, so that the upstream would read the smuggled request as one of its own.
    status, _, _ = exchange(gw.port, _carrier(gw, b"desync-measure-1"))
    assert status == 200
    measured = [h for h in _heads_since(upstream, 0) if header(h, b"x-request-id") == b"desync-measure-1"]
    declared = len(measured[0]) + len(b"\r\n\r\n")

    before = len(upstream.recording.heads)
    with connect(gw.port) as attacker:
        attacker.sendall(
            b"POST /early HTTP/1.1\r\nHost: x\r\nX-Request-Id: desync-attacker\r\n"
            b"Connection: Upgrade\r\nUpgrade: foo\r\n" + gw.auth_line + b"Content-Length: %d\r\n\r\n" % declared
        )
        attacked = read_response(attacker)
        victim = exchange(gw.port, _carrier(gw, b"desync-victim-01"))
        attacker_closed = is_closed(attacker, timeout=3)

    heads = _heads_since(upstream, before)
    request_lines = [h.split(b"\r\n", 1)[0] for h in heads]
    assert not [line for line in request_lines if b"/smuggled" in line], request_lines
    # Every head the upstream read is one the gateway forwarded: the victim's, and nothing else.
    assert [header(h, b"x-request-id") for h in heads] == [b"desync-victim-01"]
    status, headers, body = attacked
    assert status == 400
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert headers[b"connection"] == b"close" and attacker_closed
    status, headers, body = victim
    assert status == 200 and headers[b"x-request-id"] == b"desync-victim-01"
    assert body == b"desync-victim-01\n" + SMUGGLED


@pytest.mark.parametrize(
    ("upgrade", "framing", "body"),
    [
        pytest.param(b"h2c", b"Content-Length: 5\r\n", b"hello", id="h2c-content-length"),
        pytest.param(
            b"websocket", b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n", id="websocket-chunked"
        ),
        pytest.param(b"foo", b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n", id="foo-chunked"),
    ],
)
def test_an_upgrade_with_a_body_is_refused(
    gw: GatewayProcess, upstream: FakeUpstream, upgrade: bytes, framing: bytes, body: bytes
) -> None:
    request_id = b"upgrade-body-" + upgrade
    before = len(upstream.recording.heads)
    with connect(gw.port) as sock:
        sock.sendall(
            b"POST /body HTTP/1.1\r\nHost: x\r\nX-Request-Id: "
            + request_id
            + b"\r\nConnection: Upgrade\r\nUpgrade: "
            + upgrade
            + b"\r\n"
            + gw.auth_line
            + framing
            + b"\r\n"
            + body
        )
        status, headers, answer = read_response(sock)
        closed = is_closed(sock, timeout=3)
    assert status == 400 and json.loads(answer)["error"]["code"] == "bad_request"
    assert headers[b"connection"] == b"close" and closed
    assert [h for h in _heads_since(upstream, before) if header(h, b"x-request-id") == request_id] == []


def test_an_upgrade_without_a_body_is_plain_http_and_ends_the_connection(
    gw: GatewayProcess, upstream: FakeUpstream
) -> None:
    before = len(upstream.recording.heads)
    with connect(gw.port) as sock:
        sock.sendall(
            b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Request-Id: upgrade-no-body\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n" + gw.auth_line + b"\r\n"
            # What follows the head of an upgrade is not HTTP: it must not reach the upstream as a request.
            b"GET /after-upgrade HTTP/1.1\r\nHost: x\r\nX-Request-Id: after-upgrade\r\n" + gw.auth_line + b"\r\n"
        )
        answers = read_responses(sock, 2)
        closed = is_closed(sock, timeout=3)
    heads = _heads_since(upstream, before)
    assert [header(h, b"x-request-id") for h in heads] == [b"upgrade-no-body"]
    assert header(heads[0], b"upgrade") is None and header(heads[0], b"connection") is None
    assert [(status, body) for status, _, body in answers] == [(200, b"ok")]
    assert answers[0][1][b"connection"] == b"close" and closed


def test_a_body_left_unfinished_never_reaches_the_upstream(gw: GatewayProcess, upstream: FakeUpstream) -> None:
    assert exchange(gw.port, b"GET /ok HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"\r\n")[0] == 200  # key cached
    before = len(upstream.recording.heads)
    with connect(gw.port) as sock:
        sock.sendall(
            b"POST /early HTTP/1.1\r\nHost: x\r\nX-Request-Id: unfinished-body\r\n"
            + gw.auth_line
            + b"Content-Length: 100\r\n\r\n"
            + b"a" * 10
        )
    # The client has left with 90 bytes owed. The next request, on another connection, gets its
    # own answer...
    status, _, body = exchange(gw.port, _carrier(gw, b"after-unfinished"))
    assert (status, body) == (200, b"after-unfinished\n" + SMUGGLED)
    gw.access_entry("unfinished-body")  # the gateway is done with the unfinished one
    # ... and the upstream never saw the unfinished request, not even its head.
    assert [header(h, b"x-request-id") for h in _heads_since(upstream, before)] == [b"after-unfinished"]


def test_expect_100_continue_is_answered_and_the_body_forwarded_with_its_length(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory()  # in front of the stub, whose echo shows what it received
    body = bytes(range(256)) * 40
    with connect(gw.port) as sock:
        sock.sendall(
            b"POST /__stub/echo HTTP/1.1\r\nHost: x\r\n"
            + gw.auth_line
            + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        interim = b""
        for _ in range(100):  # the gateway answers the head before the body is sent
            if b"\r\n\r\n" in interim:
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n") and interim.endswith(b"\r\n\r\n")
        sock.sendall(body)
        status, _, answer = read_response(sock)
    assert status == 200
    echoed = json.loads(answer)
    received = dict(echoed["headers"])
    assert received.get("content-length") == str(len(body))
    assert "expect" not in received and "transfer-encoding" not in received
    assert echoed["body_length"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_pipelined_uploads_each_get_their_own_answer(gw: GatewayProcess, upstream: FakeUpstream) -> None:
    bodies = {b"pipelined-1": b"the first body", b"pipelined-2": b"the second, longer body"}
    data = b"".join(
        b"POST /body HTTP/1.1\r\nHost: x\r\nX-Request-Id: "
        + request_id
        + b"\r\n"
        + gw.auth_line
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
        for request_id, body in bodies.items()
    )
    before = len(upstream.recording.heads)
    with connect(gw.port) as sock:
        sock.sendall(data)
        answers = read_responses(sock, 2)
    assert [(status, headers[b"x-request-id"], body) for status, headers, body in answers] == [
        (200, request_id, request_id + b"\n" + body) for request_id, body in bodies.items()
    ]
    assert sorted(header(h, b"x-request-id") or b"" for h in _heads_since(upstream, before)) == sorted(bodies)


def test_an_upstream_that_speaks_out_of_turn_loses_its_connection(
    gateway_factory: GatewayFactory, upstream: FakeUpstream
) -> None:
    # One upstream connection: the next request would reuse the one the extra bytes came on.
    single = gateway_factory({"upstream": {"url": upstream.url, "max_connections": 1, "read_timeout": "2s"}})
    upstream.recording.late_extra_sent.clear()
    with connect(single.port) as sock:
        sock.sendall(b"GET /late-extra HTTP/1.1\r\nHost: x\r\n" + single.auth_line + b"\r\n")
        assert read_response(sock)[::2] == (200, b"ok")
        assert upstream.recording.late_extra_sent.wait(10)
        # What the upstream sent unasked belongs to no request: never the answer to this one.
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n" + single.auth_line + b"\r\n")
        assert read_response(sock)[::2] == (200, b"ok")


@pytest.mark.parametrize("client", UPSTREAM_CLIENTS)
def test_with_request_ids_checked_an_answer_nobody_asked_for_never_reaches_another_client(
    gateway_factory: GatewayFactory, upstream: FakeUpstream, client: str
) -> None:
    # Under load, an extra answer can come after its connection has gone to the next request, too
    # late for any HTTP/1.1 client to tell (tests/test_upstream_reuse.py shows the early case):
    # with check_request_id it is refused, never another client's answer.
    few = gateway_factory(
        {"upstream": {"url": upstream.url, "client": client, "max_connections": 2, "check_request_id": True}}
    )

    def one_client(number: int) -> list[tuple[bytes, int, bytes, bytes]]:
        seen = []
        with connect(few.port) as sock:
            for turn in range(8):
                own = b"c%d-%d" % (number, turn)
                path = b"/extra-now" if (number + turn) % 2 else b"/echo-id"
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n%s\r\n" % (path, own, few.auth_line))
                status, headers, body = read_response(sock)
                seen.append((own, status, headers.get(b"x-request-id", b""), body))
        return seen

    with ThreadPoolExecutor(24) as pool:
        answers = [answer for seen in pool.map(one_client, range(24)) for answer in seen]
    # Each client got its own answer, or a 502 in the gateway's dialect; never another's.
    assert [a for a in answers if a[1] == 200 and a[2] != a[0]] == []
    assert {a[1] for a in answers} <= {200, 502}
    assert all(b"forged" not in a[3] for a in answers)
    assert any(a[1] == 200 for a in answers)


def test_a_connection_header_cannot_take_the_length_off_a_body(gw: GatewayProcess, upstream: FakeUpstream) -> None:
    body = bytes(1024 * 1024 + 100)  # past limits.body_buffer_bytes: read back from a file
    before = len(upstream.recording.heads)
    status, _, answer = exchange(
        gw.port,
        b"POST /body HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nX-Request-Id: named-length\r\n"
        + gw.auth_line
        + b"Content-Length: %d\r\n\r\n" % len(body),
        [body],
    )
    assert status == 200 and answer == b"named-length\n" + body
    (head,) = _heads_since(upstream, before)
    assert header(head, b"content-length") == str(len(body)).encode()
    assert header(head, b"transfer-encoding") is None


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"GET /second HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="bad-head"),
        pytest.param(
            b"POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nAUTH\r\n\r\nZZ\r\n", id="bad-chunk"
        ),
    ],
)
def test_a_bad_pipelined_request_waits_for_the_answer_before_it(
    gw: GatewayProcess, upstream: FakeUpstream, bad: bytes
) -> None:
    before = len(upstream.recording.heads)
    with connect(gw.port) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"\r\n")
        assert upstream.recording.wait_for(before + 1)  # its answer is on its way
        sock.sendall(bad.replace(b"AUTH\r\n", gw.auth_line))
        answers = read_responses(sock, 2)
        closed = is_closed(sock)
    # The earlier answer comes whole and first, then the bad request's 400; the connection then closes.
    assert [(status, headers.get(b"connection")) for status, headers, _ in answers] == [(200, None), (400, b"close")]
    assert answers[0][2] == b"slow"
    assert closed
    assert [h.split(b"\r\n", 1)[0] for h in _heads_since(upstream, before)] == [b"GET /slow HTTP/1.1"]
