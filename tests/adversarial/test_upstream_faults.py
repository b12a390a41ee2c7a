"""An upstream that misbehaves: the client gets a clean answer fast, nothing is retried, and a
client that leaves takes its upstream request with it."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.adversarial.fake_upstream import BIG, FakeUpstream
from tests.conftest import GatewayFactory
from tests.rawhttp import connect, exchange
from tests.servers import GatewayProcess, cli_json

# Every test here runs with each upstream client: the default and aiohttp.
UPSTREAM_CLIENTS = ("builtin", "aiohttp")


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory, upstream: FakeUpstream) -> GatewayProcess:
    return gateway_factory({"upstream": {"url": upstream.url, "read_timeout": "1s"}})


def test_a_post_is_never_retried(gw: GatewayProcess, upstream: FakeUpstream) -> None:
    with httpx.Client(base_url=gw.url, headers=gw.auth) as client:
        assert client.get("/ok").status_code == 200  # leaves a pooled upstream connection behind
        before = len(upstream.recording.heads)
        answer = client.post("/close", content=b"pay once")
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "upstream_unavailable"
    posts = [head for head in upstream.recording.heads[before:] if head.startswith(b"POST /close ")]
    assert len(posts) == 1


@pytest.mark.parametrize("path", ["/garbage", "/huge-head"])
def test_a_malformed_upstream_response_is_a_502(gw: GatewayProcess, path: str) -> None:
    answer = httpx.get(f"{gw.url}{path}", headers=gw.auth)
    assert answer.status_code == 502
    assert answer.headers["content-type"] == "application/json"
    assert json.loads(answer.content)["error"]["code"] == "upstream_unavailable"


@pytest.mark.parametrize("path", ["/garbage", "/huge-head", "/close"])
def test_an_upstream_failure_is_logged_without_the_request(
    gateway_factory: GatewayFactory, upstream: FakeUpstream, path: str
) -> None:
    # With the key forwarded, a failure's log line must still hold none of the request's headers
    # or query string (an HTTP client library's own description of a failure may hold both).
    gw = gateway_factory({"upstream": {"url": upstream.url, "forward_authorization": True}})
    headers = gw.auth | {"Cookie": "session=cookie-secret", "X-Request-Id": f"logged{path[1:]}"}
    answer = httpx.get(f"{gw.url}{path}?api_key=query-secret", headers=headers)
    assert answer.status_code == 502
    assert gw.wait_for_log("upstream request GET")
    for secret in (gw.key, "cookie-secret", "query-secret"):
        assert secret not in gw.log


@pytest.mark.parametrize("path", ["/status-999", "/status-600", "/control-byte"])
def test_an_upstream_answer_that_cannot_be_passed_on_is_a_502(gw: GatewayProcess, path: str) -> None:
    status, headers, body = exchange(
        gw.port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"\r\n"
    )
    assert status != 0, "an empty reply"
    assert status == 502
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(body)["error"]["code"] == "upstream_unavailable"


@pytest.mark.parametrize("path", ["/hang", "/interim-hang", "/interim-drip"])
def test_a_hung_upstream_is_a_504_at_the_read_timeout(gw: GatewayProcess, path: str) -> None:
    # Interim 1xx answers, one or many, do not restart the wait for the final one.
    started = time.monotonic()
    answer = httpx.get(f"{gw.url}{path}", headers=gw.auth)
    assert answer.status_code == 504
    assert 0.9 < time.monotonic() - started < 5


def test_a_client_that_leaves_cancels_the_upstream_request(
    gateway_factory: GatewayFactory, upstream: FakeUpstream
) -> None:
    # A long read timeout: only the client's departure can end the upstream request early.
    patient = gateway_factory({"upstream": {"url": upstream.url, "read_timeout": "60s"}})
    upstream.recording.hang_closed.clear()
    before = len(upstream.recording.heads)
    with connect(patient.port) as sock:
        sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\nX-Request-Id: left-early\r\n" + patient.auth_line + b"\r\n")
        assert upstream.recording.wait_for(before + 1)
    assert upstream.recording.hang_closed.wait(10), "the upstream request outlived its client"
    entry = patient.access_entry("left-early")
    assert entry["outcome"] == "client_closed" and entry["status"] == 499


def test_a_client_that_leaves_a_pipeline_cancels_the_upstream_request(
    gateway_factory: GatewayFactory, upstream: FakeUpstream
) -> None:
    patient = gateway_factory({"upstream": {"url": upstream.url, "read_timeout": "60s"}})
    upstream.recording.hang_closed.clear()
    before = len(upstream.recording.heads)
    with connect(patient.port) as sock:
        hang = b"GET /hang HTTP/1.1\r\nHost: x\r\nX-Request-Id: left-pipeline\r\n" + patient.auth_line + b"\r\n"
        waiting = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Request-Id: never-answered\r\n" + patient.auth_line + b"\r\n"
        sock.sendall(hang + waiting)
        assert upstream.recording.wait_for(before + 1)
    # A request queued behind it must not keep the client's leaving unnoticed.
    assert upstream.recording.hang_closed.wait(10), "the upstream request outlived its client"
    entry = patient.access_entry("left-pipeline")
    assert (entry["status"], entry["outcome"]) == (499, "client_closed")
    assert patient.wait_for_stdout_lines(2)  # the queued request is logged too, never answered
    assert [e["status"] for e in map(json.loads, patient.stdout.splitlines()) if e["path"] == "/ok"] == [499]
    assert "ERROR" not in patient.log and "Traceback" not in patient.log


def test_an_upstream_that_stalls_mid_body_is_cut_off_at_the_read_timeout(gw: GatewayProcess) -> None:
    started = time.monotonic()
    answer = httpx.get(f"{gw.url}/stalled-body", headers=gw.auth, timeout=30)
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_unavailable"
    assert time.monotonic() - started < 5


def test_a_header_that_never_ends_is_a_502_at_once(gw: GatewayProcess) -> None:
    started = time.monotonic()
    answer = httpx.get(f"{gw.url}/endless-header", headers=gw.auth, timeout=30)
    assert answer.status_code == 502
    assert time.monotonic() - started < 5
    assert httpx.get(f"{gw.url}/ok", headers=gw.auth).status_code == 200


def test_trailers_never_become_headers(gw: GatewayProcess) -> None:
    answer = httpx.get(f"{gw.url}/trailers", headers=gw.auth)
    assert answer.status_code == 200 and answer.content == b"ok"
    assert "set-cookie" not in answer.headers and "location" not in answer.headers


def test_an_early_refusal_of_a_large_upload_reaches_the_client(
    gateway_factory: GatewayFactory, upstream: FakeUpstream
) -> None:
    # The upstream answers 413 without reading a body larger than the kernels' buffers hold.
    gw = gateway_factory(
        {"upstream": {"url": upstream.url, "read_timeout": "2s"}, "limits": {"max_body_bytes": "64MiB"}}
    )
    started = time.monotonic()
    answer = httpx.post(f"{gw.url}/early-refusal", headers=gw.auth, content=bytes(40 << 20), timeout=30)
    assert answer.status_code == 413 and answer.content == b"too big"
    assert time.monotonic() - started < 10


def test_an_upgrade_answer_is_a_502_without_a_traceback(gw: GatewayProcess) -> None:
    answer = httpx.get(f"{gw.url}/upgrade", headers=gw.auth)
    assert answer.status_code == 502
    assert "Traceback" not in gw.log


@pytest.mark.parametrize(
    ("path", "content"),
    [("/gzip-until-close", b"not really gzip"), ("/xchunked", b"5\r\nhello\r\n0\r\n\r\n")],
)
def test_a_body_that_ends_with_the_connection_is_passed_whole(gw: GatewayProcess, path: str, content: bytes) -> None:
    # A final coding that is not "chunked" (even one that ends in "chunked") frames nothing.
    status, headers, body = exchange(gw.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + gw.auth_line + b"\r\n")
    assert status == 200 and body == content


def test_a_trailer_that_never_ends_is_cut_off(gw: GatewayProcess, upstream: FakeUpstream) -> None:
    # Trailers are dropped, but the parser gathers a trailer's value in memory as it comes: an
    # endless one is bounded like a head, and the exchange ends long before 16 MiB.
    upstream.recording.trailer_cut.clear()
    with connect(gw.port) as sock:
        sock.sendall(b"GET /endless-trailer HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 502 "):  # (refused before the answer began: as good)
        assert head.startswith(b"HTTP/1.1 200 ") and body.startswith(b"2\r\nok\r\n")
        assert not body.endswith(b"0\r\n\r\n")  # cut off, never passed on as a whole answer
    assert upstream.recording.trailer_cut.wait(10)


def test_a_head_too_large_is_a_502_even_in_one_read(gw: GatewayProcess) -> None:
    answer = httpx.get(f"{gw.url}/big-head-one-read", headers=gw.auth)
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_unavailable"


def test_a_slow_reader_is_no_upstream_timeout(gw: GatewayProcess) -> None:
    # The gateway stops reading from the upstream while the client takes nothing: that wait is
    # the client's (listen.send_timeout), not the upstream's (read_timeout, 1 s here).
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before connecting: a small window
        sock.settimeout(10)
        sock.connect(("127.0.0.1", gw.port))
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"\r\n")
        received = sock.recv(65536)
        time.sleep(2.5)  # the slow client itself, well past read_timeout
        head_end = received.find(b"\r\n\r\n") + 4
        while len(received) - head_end < BIG and (chunk := sock.recv(1 << 20)):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ")
    assert len(received) - head_end == BIG


def test_a_refused_request_body_leaves_its_connection(gw: GatewayProcess, upstream: FakeUpstream) -> None:
    # An upstream that refuses a request without reading its body may read the body as the next
    # request on that connection: the connection must carry no other exchange.
    upstream.recording.refusal_closed.clear()
    smuggled = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-User-Id: someone-else\r\n\r\n"
    answer = httpx.post(f"{gw.url}/refuse-unread", headers=gw.auth, content=smuggled)
    assert (answer.status_code, answer.content) == (400, b"refused")
    assert upstream.recording.refusal_closed.wait(5)


def test_answers_are_checked_against_the_request_id_when_the_upstream_echoes_it(
    gw: GatewayProcess, gateway_factory: GatewayFactory, upstream: FakeUpstream
) -> None:
    checking = gateway_factory({"upstream": {"url": upstream.url, "check_request_id": True}})
    echoed = httpx.get(f"{checking.url}/echo-id", headers=checking.auth | {"X-Request-Id": "mine-1"})
    assert (echoed.status_code, echoed.content, echoed.headers["x-request-id"]) == (200, b"ok", "mine-1")
    for path in ("/other-id", "/ok"):  # another request's id, or none: an answer meant for another
        refused = httpx.get(f"{checking.url}{path}", headers=checking.auth)
        assert refused.status_code == 502 and refused.json()["error"]["code"] == "upstream_unavailable"
    assert checking.wait_for_log("does not carry this request's X-Request-Id")
    # Off (the default): the upstream's own id is replaced by the gateway's, as for any answer.
    unchecked = httpx.get(f"{gw.url}/other-id", headers=gw.auth | {"X-Request-Id": "mine-2"})
    assert (unchecked.status_code, unchecked.headers["x-request-id"]) == (200, "mine-2")


def test_a_no_content_answer_that_announces_a_body_leaves_its_connection(
    gw: GatewayProcess, upstream: FakeUpstream
) -> None:
    # A 204 may not have a body; one that announces one may send it late, after the connection
    # would have gone to the next request: that request must never get it as its answer.
    upstream.recording.late_extra_sent.clear()
    assert httpx.get(f"{gw.url}/no-content-late", headers=gw.auth).status_code == 204
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.get, f"{gw.url}/slow", headers=gw.auth)
        assert upstream.recording.late_extra_sent.wait(5)
        answer = slow.result()
    assert (answer.status_code, answer.content) == (200, b"slow") and "x-forged" not in answer.headers


def test_an_answer_that_breaks_off_is_not_paid_for(gateway_factory: GatewayFactory, upstream: FakeUpstream) -> None:
    # A 2xx head whose body never comes whole: the client gets 502, so neither the wallet nor the
    # usage counters charge it (they are charged at one point, and agree).
    rules = [{"method": "GET", "path": "/stalled-body", "cost": 1}, {"method": "GET", "path": "/ok", "cost": 1}]
    gw = gateway_factory(
        {
            "upstream": {"url": upstream.url, "read_timeout": "1s"},
            "credits": {"wallet": True, "rules": rules},
            "usage": {"flush_seconds": "100ms"},
        }
    )
    cli_json(gw, "users", "credits", gw.user_id, "--set", "10")
    assert httpx.get(f"{gw.url}/stalled-body", headers=gw.auth, timeout=30).status_code == 502
    paid = httpx.get(f"{gw.url}/ok", headers=gw.auth)
    assert paid.status_code == 200 and paid.headers["x-credits-remaining"] == "9"
    deadline = time.monotonic() + 10
    while cli_json(gw, "users", "credits", gw.user_id)["balance"] != 9:
        assert time.monotonic() < deadline, "the spent credit never reached the store"
    assert cli_json(gw, "keys", "show", gw.key_id)["credits"] == 1
