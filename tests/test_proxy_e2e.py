"""The proxy end to end: a real gateway in front of the real stub, over loopback sockets."""

from __future__ import annotations

import gzip
import json
import uuid

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.rawhttp import exchange
from tests.servers import GatewayProcess, ServerProcess, free_port, received_ids, received_paths

FORWARDED = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
# What the gateway adds after the client's own headers.
ADDED = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-user-id", "x-api-key-id", "x-request-id"]


def echo(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def with_key(gateway: GatewayProcess, head: bytes) -> bytes:
    """``head`` with the gateway's key in an Authorization header after the request line."""
    request_line, _, rest = head.partition(b"\r\n")
    return request_line + b"\r\n" + gateway.auth_line + rest


def raw_echo(gateway: GatewayProcess, head: bytes) -> dict:
    status, _, body = exchange(gateway.port, with_key(gateway, head))
    assert status == 200, body
    return json.loads(body)


# ------------------------------------------------------------------------- request headers


def test_upstream_receives_exactly_the_client_headers_plus_forwarding_ones(gateway: GatewayProcess):
    head = (
        b"GET /__stub/echo HTTP/1.1\r\n"
        b"Host: api.example.test\r\n"
        b"User-Agent: consumer/1.0\r\n"
        b"X-Custom: one\r\n"
        b"Accept: text/csv\r\n"
        b"X-Custom: two\r\n"
        b"Cookie: a=1\r\n"
        b"\r\n"
    )
    seen = raw_echo(gateway, head)
    stub_host = gateway_upstream_host(gateway)
    assert seen["headers"] == [
        ["host", stub_host],
        ["user-agent", "consumer/1.0"],
        ["x-custom", "one"],
        ["accept", "text/csv"],
        ["x-custom", "two"],
        ["cookie", "a=1"],
        ["x-forwarded-for", "127.0.0.1"],
        ["x-forwarded-proto", "http"],
        ["x-forwarded-host", "api.example.test"],
        ["x-user-id", gateway.user_id],
        ["x-api-key-id", gateway.key_id],
        ["x-request-id", seen_request_id(seen)],
    ]


def seen_request_id(seen: dict) -> str:
    """The X-Request-Id the upstream received (the gateway's own: the client sent none)."""
    ids = [value for name, value in seen["headers"] if name == "x-request-id"]
    assert len(ids) == 1 and ids[0].isalnum()
    return ids[0]


def gateway_upstream_host(gateway: GatewayProcess) -> str:
    # The gateway fixture forwards to the stub; its Host is the stub's host:port.
    seen = raw_echo(gateway, b"GET /__stub/echo HTTP/1.1\r\nHost: h\r\n\r\n")
    return dict(seen["headers"])["host"]


def test_library_default_headers_are_not_added(gateway: GatewayProcess):
    """aiohttp and httpx add Accept, Accept-Encoding, User-Agent and Content-Type unless told not to."""
    for method in (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"):
        seen = raw_echo(gateway, method + b" /__stub/echo HTTP/1.1\r\nHost: h\r\n\r\n")
        names = [name for name, _ in seen["headers"]]
        assert names == ["host", *ADDED], method


@pytest.mark.parametrize(
    "connection_header",
    [
        pytest.param(b"Connection: keep-alive, X-Secret-Hop\r\n", id="named-in-connection"),
        pytest.param(b"Connection: X-SECRET-HOP\r\n", id="named-uppercase"),
        pytest.param(b"Connection: close\r\nConnection: x-secret-hop\r\n", id="second-connection-header"),
    ],
)
def test_hop_by_hop_request_headers_are_dropped(gateway: GatewayProcess, connection_header: bytes):
    head = (
        b"GET /__stub/echo HTTP/1.1\r\nHost: h\r\n"
        + connection_header
        + b"Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-Checksum\r\nUpgrade: websocket\r\n"
        b"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n"
        b"Proxy-Authenticate: Basic\r\nX-Secret-Hop: 1\r\nX-Kept: yes\r\n\r\n"
    )
    seen = raw_echo(gateway, head)
    names = [name for name, _ in seen["headers"]]
    assert names == ["host", "x-kept", *ADDED]


def test_client_sent_forwarding_headers_are_replaced(gateway: GatewayProcess):
    head = (
        b"GET /__stub/echo HTTP/1.1\r\nHost: real.example.test\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\r\n"
    )
    headers = raw_echo(gateway, head)["headers"]
    forwarded = [pair for pair in headers if pair[0] in FORWARDED]
    assert forwarded == [
        ["x-forwarded-for", "127.0.0.1"],
        ["x-forwarded-proto", "http"],
        ["x-forwarded-host", "real.example.test"],
    ]


def test_trusted_peer_forwarding_headers_are_kept_and_appended(gateway_factory: GatewayFactory):
    trusting = gateway_factory({"proxy": {"trusted_peers": ["127.0.0.0/8"]}})
    head = (
        b"GET /__stub/echo HTTP/1.1\r\nHost: lb.example.test\r\n"
        b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 10.1.2.3\r\n"
        b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: api.example.test\r\n\r\n"
    )
    headers = raw_echo(trusting, head)["headers"]
    forwarded = [pair for pair in headers if pair[0] in FORWARDED]
    assert forwarded == [
        ["x-forwarded-for", "203.0.113.9, 10.1.2.3, 127.0.0.1"],
        ["x-forwarded-proto", "https"],
        ["x-forwarded-host", "api.example.test"],
    ]


def test_host_is_the_upstreams_unless_preserved(gateway: GatewayProcess, gateway_factory: GatewayFactory, stub):
    head = b"GET /__stub/echo HTTP/1.1\r\nHost: api.example.test\r\n\r\n"
    assert dict(raw_echo(gateway, head)["headers"])["host"] == stub.url.removeprefix("http://")
    preserving = gateway_factory({"upstream": {"preserve_host": True}})
    assert dict(raw_echo(preserving, head)["headers"])["host"] == "api.example.test"


# ------------------------------------------------------------------------- paths and methods


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/a%2Fb", id="encoded-slash"),
        pytest.param("//x", id="double-slash-at-root"),
        pytest.param("/%2e%2e/", id="encoded-dot-segment"),
        pytest.param("/x/./y/../z", id="dot-segments"),
        pytest.param("/__stub/echo//a///b/", id="repeated-slashes"),
        pytest.param("/caf%C3%A9/%20x%2b?", id="percent-encoded-utf8"),
        pytest.param("/q?a=%2F&b=1&b=2&=&c", id="raw-query"),
        pytest.param("/q?redirect=http://other.example/x%3Fy", id="url-in-query"),
    ],
)
def test_path_and_query_reach_the_upstream_byte_for_byte(gateway: GatewayProcess, target: str):
    seen = raw_echo(gateway, b"GET " + target.encode() + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    path, _, query = target.partition("?")
    assert seen["raw_path"] == path
    assert seen["query_string"] == query


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_is_forwarded(client: httpx.Client, method: str):
    content = b"payload" if method in ("POST", "PUT", "PATCH") else None
    seen = echo(client.request(method, "/__stub/echo", content=content))
    assert seen["method"] == method
    assert seen["body_length"] == (len(content) if content else 0)


def test_head_keeps_the_upstreams_content_length(client: httpx.Client, stub: ServerProcess):
    direct = httpx.head(stub.url + "/__stub/bytes/12345")
    through = client.head("/__stub/bytes/12345")
    assert through.status_code == 200
    assert through.headers["content-length"] == direct.headers["content-length"] == "12345"
    assert through.content == b""


# ------------------------------------------------------------------------- responses


@pytest.mark.parametrize("status", [200, 201, 204, 304, 400, 404, 418, 500, 503])
def test_status_codes_pass_through(client: httpx.Client, status: int):
    response = client.get(f"/__stub/status/{status}")
    assert response.status_code == status
    if status in (204, 304):
        assert response.content == b""


def test_redirect_is_passed_not_followed(client: httpx.Client):
    response = client.get("/__stub/redirect", params={"to": "https://elsewhere.example/landing?x=1", "status": 302})
    assert response.status_code == 302
    assert response.headers["location"] == "https://elsewhere.example/landing?x=1"


def test_repeated_set_cookie_headers_are_kept(client: httpx.Client):
    response = client.get("/__stub/cookies")
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly", "c=3; Path=/; Secure"]


def test_gzip_body_is_passed_without_decoding(client: httpx.Client, stub: ServerProcess):
    with client.stream("GET", "/__stub/gzip") as response:
        raw = b"".join(response.iter_raw())
    direct = httpx.get(stub.url + "/__stub/gzip")
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["content-length"] == str(len(raw))
    assert json.loads(gzip.decompress(raw)) == direct.json()


def test_binary_empty_and_chunked_bodies(client: httpx.Client):
    assert client.get("/__stub/bytes/0").content == b""
    pattern = bytes(i % 251 for i in range(300_000))
    fixed = client.get("/__stub/bytes/300000")
    assert fixed.headers["content-length"] == "300000"
    assert fixed.content == pattern
    chunked = client.get("/__stub/bytes/300000", params={"chunked": 1, "chunk": 1000})
    assert "content-length" not in chunked.headers
    assert chunked.headers["transfer-encoding"] == "chunked"
    assert chunked.content == pattern


def test_response_headers_are_the_upstreams_only(client: httpx.Client, stub: ServerProcess):
    """Same names, in the same order, as the upstream sends: one Date and one Server, the upstream's."""
    direct = httpx.get(stub.url + "/api/v1/templates")
    through = client.get("/api/v1/templates")
    assert through.content == direct.content
    added = ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-request-id"]
    names = [name for name, _ in through.headers.multi_items()]
    assert names == [name for name, _ in direct.headers.multi_items()] + added
    assert through.headers.get_list("server") == ["uvicorn"]
    assert len(through.headers.get_list("date")) == 1


def test_mockup_api_round_trip(client: httpx.Client):
    created = client.post("/api/v1/mockups/generate", json={"template_id": "tpl_mug", "artwork_url": "https://a/b.png"})
    assert created.status_code == 201
    mockup = created.json()["data"]
    assert client.get(f"/api/v1/mockups/{mockup['id']}").json()["data"] == mockup
    invalid = client.post("/api/v1/mockups/generate", json={"template_id": "tpl_mug"})
    assert invalid.status_code == 400
    assert invalid.json()["error"]["code"] == "validation_failed"


# ------------------------------------------------------------------------- body limit


@pytest.fixture(scope="module")
def small_limit_gateway(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory({"limits": {"max_body_bytes": "64KiB"}})


def test_declared_body_over_the_limit_is_refused_before_it_is_sent(small_limit_gateway, stub):
    request_id = uuid.uuid4().hex
    head = (
        b"POST /__stub/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 65537\r\n"
        b"X-Request-Id: " + request_id.encode() + b"\r\n\r\n"
    )
    # The body itself is never sent.
    status, headers, body = exchange(small_limit_gateway.port, with_key(small_limit_gateway, head))
    assert status == 413
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(body) == {
        "error": {"code": "validation_failed", "message": "Request body is larger than 65536 bytes"}
    }
    assert request_id not in received_ids(stub)


def test_body_at_the_limit_is_forwarded(small_limit_gateway):
    with httpx.Client(base_url=small_limit_gateway.url, headers=small_limit_gateway.auth) as http:
        seen = echo(http.post("/__stub/echo", content=b"x" * 65536))
    assert seen["body_length"] == 65536


def test_chunked_body_crossing_the_limit_is_cut_off(small_limit_gateway, stub):
    request_id = uuid.uuid4().hex
    head = (
        b"POST /__stub/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
        b"X-Request-Id: " + request_id.encode() + b"\r\n\r\n"
    )
    # 20 KiB at a time, one byte past the limit in all, and no final chunk: the gateway must
    # answer on crossing, not wait for the end.
    parts = [b"5000\r\n" + b"y" * 0x5000 + b"\r\n"] * 3 + [b"1001\r\n" + b"y" * 0x1001 + b"\r\n"]
    assert sum(len(p) for p in parts) > 65536
    status, headers, body = exchange(small_limit_gateway.port, with_key(small_limit_gateway, head), parts)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "validation_failed"
    assert request_id not in received_ids(stub)
    # The upstream got the start of it (streamed, not buffered), never a complete request.
    assert small_limit_gateway.process.poll() is None


# ------------------------------------------------------------------------- upstream failures


def test_unreachable_upstream_is_502(gateway_factory: GatewayFactory):
    nothing_there = gateway_factory({"upstream": {"url": f"http://127.0.0.1:{free_port()}"}})
    response = httpx.get(nothing_there.url + "/api/v1/templates", headers=nothing_there.auth)
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": {"code": "upstream_unavailable", "message": "The service is unavailable"}}


def test_slow_upstream_is_504(gateway_factory: GatewayFactory):
    impatient = gateway_factory({"upstream": {"read_timeout": "300ms"}})
    response = httpx.get(impatient.url + "/__stub/slow", params={"delay": 3}, headers=impatient.auth, timeout=10)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_mockupanda_profile_answers_in_its_own_shape(gateway_factory: GatewayFactory):
    panda = gateway_factory(
        {"errors": {"profile": "mockupanda"}, "upstream": {"url": f"http://127.0.0.1:{free_port()}"}}
    )
    response = httpx.get(panda.url + "/api/v1/templates", headers=panda.auth)
    assert response.status_code == 502
    assert response.json() == {"error": "Upstream service unavailable", "code": "UPSTREAM_UNAVAILABLE"}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upstream_reset_mid_response_closes_the_client_connection(gateway: GatewayProcess, chunked: bool):
    params = {"after": 100_000, **({"chunked": 1} if chunked else {})}
    with httpx.Client(base_url=gateway.url, headers=gateway.auth) as http:
        with http.stream("GET", "/__stub/reset", params=params) as response:
            assert response.status_code == 200
            received = bytearray()
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in response.iter_raw():
                    received.extend(chunk)
    assert len(received) <= 100_000
    assert gateway.wait_for_log("upstream broke off the response to GET '/__stub/reset'")
    assert "Traceback" not in gateway.log


def test_small_response_reset_before_it_is_complete_is_502(client: httpx.Client):
    # A short body is read whole before anything is sent, so its failure can still be answered.
    response = client.get("/__stub/reset", params={"after": 100})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"


def test_shutdown_closes_the_upstream_pool(gateway_factory: GatewayFactory):
    server = gateway_factory()
    assert httpx.get(server.url + "/api/v1/templates", headers=server.auth).status_code == 200
    server.stop()  # SIGTERM; uvicorn re-raises it after a graceful shutdown, so the status is -15
    # The lifespan's shutdown ran to its end (uvicorn says so only when it fails).
    assert f"stopped process {server.pid}" in server.log and "shutdown failed" not in server.log
    assert "Unclosed" not in server.log


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/admin/v1/keys", "/admin/v1/openapi.json"])
def test_no_path_is_reserved_on_the_public_listener(client: httpx.Client, path: str):
    """Paths a gateway might keep for itself go to the upstream like any other."""
    seen = echo(client.get(path))
    assert seen["raw_path"] == path


@pytest.mark.parametrize("client", ["builtin", "aiohttp", "httpx"])
def test_a_base_path_in_upstream_url_is_put_before_every_path(
    gateway_factory: GatewayFactory, stub: ServerProcess, client: str
) -> None:
    gw = gateway_factory({"upstream": {"url": stub.url + "/base/v2/", "client": client}})
    request_id = uuid.uuid4().hex
    answer = httpx.get(f"{gw.url}/anything/here?limit=2", headers=gw.auth | {"X-Request-Id": request_id})
    assert answer.status_code == 200  # the stub echoes any path it does not serve
    assert received_ids(stub)[-1] == request_id
    assert received_paths(stub)[-1] == "/base/v2/anything/here"


@pytest.mark.parametrize("path", ["/../admin", "/a/%2e%2e/b", "/a/.%2E/b", "/a%2f..%2fb", "/./x"])
def test_a_dot_segment_cannot_leave_the_base_path(
    gateway_factory: GatewayFactory, stub: ServerProcess, path: str
) -> None:
    gw = gateway_factory({"upstream": {"url": stub.url + "/v2"}})
    request_id = uuid.uuid4().hex
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Request-Id: {request_id}\r\n".encode() + gw.auth_line + b"\r\n"
    status, _, body = exchange(gw.port, head)
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"
    assert request_id not in received_ids(stub)
