"""The access log and X-Request-Id, end to end: a real gateway's stdout, read line by line."""

from __future__ import annotations

import itertools
import json
import socket

import httpx
import pytest

from gateway.auth.keys import hash_key
from tests.conftest import GatewayFactory
from tests.rawhttp import exchange
from tests.servers import GatewayProcess, ServerProcess, cli_json, free_port, received_ids

FIELDS = [
    "ts",
    "request_id",
    "client",
    "method",
    "path",
    "status",
    "outcome",
    "duration_ms",
    "upstream_status",
    "upstream_ms",
    "request_bytes",
    "response_bytes",
    "key_id",
    "user_id",
    "user_agent",
    "observed",
]


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory({"rate_limits": {"default": ["1000000/minute"]}})


def test_a_forwarded_request(gw: GatewayProcess, stub: ServerProcess) -> None:
    response = httpx.get(f"{gw.url}/api/v1/templates?token=secret-query", headers=gw.auth)
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    entry = gw.access_entry(request_id)
    assert list(entry) == FIELDS
    assert entry["method"] == "GET" and entry["path"] == "/api/v1/templates"  # never the query string
    assert entry["status"] == 200 and entry["outcome"] == "forwarded"
    assert entry["key_id"] == gw.key_id and entry["user_id"] == gw.user_id
    assert 0 < entry["upstream_ms"] <= entry["duration_ms"] and entry["upstream_status"] == 200
    assert entry["ts"].endswith("Z") and len(entry["ts"]) == len("2026-01-01T00:00:00.000Z")
    assert entry["client"] == "127.0.0.1" and entry["user_agent"] == f"python-httpx/{httpx.__version__}"
    assert entry["request_bytes"] == 0 and entry["response_bytes"] == len(response.content) > 0
    assert "secret-query" not in gw.stdout


def test_request_and_response_bytes_of_a_body_both_ways(gw: GatewayProcess) -> None:
    sent = b"u" * 12_345
    echoed = httpx.post(f"{gw.url}/echo", headers=gw.auth, content=sent)
    assert echoed.status_code == 200
    entry = gw.access_entry(echoed.headers["x-request-id"])
    assert (entry["request_bytes"], entry["response_bytes"]) == (len(sent), len(echoed.content))
    # A large answer, streamed in parts: every byte the client got is counted.
    streamed = httpx.get(f"{gw.url}/__stub/bytes/300000", headers=gw.auth)
    assert len(streamed.content) == 300_000
    assert gw.access_entry(streamed.headers["x-request-id"])["response_bytes"] == 300_000


@pytest.mark.parametrize("code", [404, 503])
def test_the_upstreams_status_beside_the_gateways(gw: GatewayProcess, code: int) -> None:
    response = httpx.get(f"{gw.url}/__stub/status/{code}", headers=gw.auth)
    entry = gw.access_entry(response.headers["x-request-id"])
    assert response.status_code == entry["status"] == entry["upstream_status"] == code
    assert entry["outcome"] == "forwarded" and entry["upstream_ms"] is not None


def test_an_upstream_that_cannot_be_reached_has_no_status(gateway_factory: GatewayFactory) -> None:
    down = gateway_factory({"upstream": {"url": f"http://127.0.0.1:{free_port()}"}})
    response = httpx.get(f"{down.url}/x", headers=down.auth)
    entry = down.access_entry(response.headers["x-request-id"])
    assert (entry["status"], entry["upstream_status"], entry["outcome"]) == (502, None, "upstream_unavailable")
    assert entry["upstream_ms"] is not None  # it was asked: the time it took to fail
    assert entry["response_bytes"] == len(response.content) > 0


def test_the_client_behind_a_trusted_peer(gateway_factory: GatewayFactory) -> None:
    trusting = gateway_factory({"proxy": {"trusted_peers": ["127.0.0.1"]}})
    forwarded = {**trusting.auth, "X-Forwarded-For": "198.51.100.9, 203.0.113.7"}
    response = httpx.get(f"{trusting.url}/x", headers=forwarded)
    assert trusting.access_entry(response.headers["x-request-id"])["client"] == "203.0.113.7"


def test_a_claimed_client_from_an_untrusted_peer_is_not_logged(gw: GatewayProcess) -> None:
    response = httpx.get(f"{gw.url}/x", headers={**gw.auth, "X-Forwarded-For": "203.0.113.7"})
    assert gw.access_entry(response.headers["x-request-id"])["client"] == "127.0.0.1"


def test_the_user_agent_is_bounded_and_escaped(gw: GatewayProcess) -> None:
    agent = b'curl/8 "quoted" back\\slash \xe9t\xe9 \ttab ' + b"x" * 400
    status, _, _ = exchange(
        gw.port,
        b"GET /x HTTP/1.1\r\nHost: x\r\nX-Request-Id: odd-agent\r\n"
        + gw.auth_line
        + b"User-Agent: "
        + agent
        + b"\r\n\r\n",
    )
    assert status == 200
    logged = gw.access_entry("odd-agent")["user_agent"]
    assert logged == agent[:256].decode("latin-1")
    line = next(line for line in gw.stdout.splitlines() if '"odd-agent"' in line)
    assert r'"user_agent":"curl/8 \"quoted\" back\\slash \u00e9t\u00e9 \ttab x' in line
    assert line.isascii()
    none = exchange(gw.port, b"GET /x HTTP/1.1\r\nHost: x\r\nX-Request-Id: no-agent\r\n" + gw.auth_line + b"\r\n")
    assert none[0] == 200 and gw.access_entry("no-agent")["user_agent"] is None


def test_answers_of_the_gateway_itself(gw: GatewayProcess) -> None:
    missing = httpx.get(f"{gw.url}/api/v1/templates")
    wrong = httpx.get(f"{gw.url}/api/v1/templates", headers={"Authorization": "Bearer mk_live_nope"})
    for response, outcome in ((missing, "missing_key"), (wrong, "invalid_key")):
        assert response.status_code == 401
        entry = gw.access_entry(response.headers["x-request-id"])
        assert entry["status"] == 401 and entry["outcome"] == outcome
        assert entry["key_id"] is None and entry["user_id"] is None and entry["upstream_ms"] is None
        assert entry["upstream_status"] is None and entry["response_bytes"] == len(response.content) > 0
        assert entry["client"] == "127.0.0.1"


def test_a_request_the_protocol_refuses(gw: GatewayProcess) -> None:
    status, headers, body = exchange(
        gw.port, b"GET /x HTTP/1.1\r\nHost: x\r\nX-Request-Id: too-many-headers\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n"
    )
    assert status == 431
    entry = gw.access_entry(headers[b"x-request-id"].decode())
    assert (entry["status"], entry["outcome"], entry["client"]) == (431, "headers_too_large", "127.0.0.1")
    assert (entry["upstream_status"], entry["request_bytes"], entry["response_bytes"]) == (None, 0, len(body))


def test_a_rate_limited_request(gateway_factory: GatewayFactory) -> None:
    server = gateway_factory({"rate_limits": {"default": ["1/minute"]}})
    assert httpx.get(f"{server.url}/x", headers=server.auth).status_code == 200
    refused = httpx.get(f"{server.url}/x", headers=server.auth)
    assert refused.status_code == 429
    entry = server.access_entry(refused.headers["x-request-id"])
    assert entry["outcome"] == "rate_limited" and entry["status"] == 429
    assert entry["key_id"] == server.key_id and entry["upstream_ms"] is None


def test_a_client_that_leaves_mid_upload(gw: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nX-Request-Id: left-mid-upload\r\n"
            + gw.auth_line
            + b"Content-Length: 1000000\r\n\r\n"
            + b"a" * 1000
        )
    entry = gw.access_entry("left-mid-upload")
    assert entry["outcome"] == "client_closed" and entry["status"] == 499


def test_path_is_logged_raw_and_escaped(gw: GatewayProcess) -> None:
    # uvicorn's parser refuses raw non-ASCII and control bytes in the target; these it lets through.
    path = b'/odd/%2e%2E/a"b\\c/{}|%C3%A9'
    status, headers, _ = exchange(
        gw.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nX-Request-Id: odd-path\r\n" + gw.auth_line + b"\r\n"
    )
    assert status == 200 and headers[b"x-request-id"] == b"odd-path"
    assert gw.access_entry("odd-path")["path"] == path.decode("latin-1")
    line = next(line for line in gw.stdout.splitlines() if '"odd-path"' in line)
    assert r'"path":"/odd/%2e%2E/a\"b\\c/{}|%C3%A9"' in line


# ------------------------------------------------------------------------------ X-Request-Id


def test_a_plain_client_request_id_is_kept_and_forwarded(gw: GatewayProcess, stub: ServerProcess) -> None:
    request_id = "Client-Id_1.2-" + "x" * 114  # 128 characters
    response = httpx.get(f"{gw.url}/echo", headers={**gw.auth, "X-Request-Id": request_id})
    assert response.headers.get_list("x-request-id") == [request_id]
    assert [value for name, value in response.json()["headers"] if name == "x-request-id"] == [request_id]
    assert request_id in received_ids(stub)
    assert gw.access_entry(request_id)["path"] == "/echo"


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(["x" * 129], id="too-long"),
        pytest.param(["has space"], id="space"),
        pytest.param(['quote"'], id="quote"),
        pytest.param(["ä"], id="non-ascii"),
        pytest.param([""], id="empty"),
        pytest.param(["one", "two"], id="two-copies"),
    ],
)
def test_any_other_request_id_is_replaced(gw: GatewayProcess, sent: list[str]) -> None:
    head = b"GET /echo HTTP/1.1\r\nHost: x\r\n" + gw.auth_line
    head += b"".join(b"X-Request-Id: " + value.encode() + b"\r\n" for value in sent)
    status, headers, body = exchange(gw.port, head + b"\r\n")
    assert status == 200
    ours = headers[b"x-request-id"].decode()
    assert ours not in sent and ours.isalnum()
    forwarded = [value for name, value in json.loads(body)["headers"] if name == "x-request-id"]
    assert forwarded == [ours]
    assert gw.access_entry(ours)["status"] == 200


def test_generated_ids_are_unique_and_share_nothing_a_client_could_extrapolate(gw: GatewayProcess) -> None:
    with httpx.Client(base_url=gw.url) as client:
        ids = [client.get("/api/v1/templates").headers["x-request-id"] for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(len(value) == 24 and int(value, 16) >= 0 for value in ids)
    # Not a fixed prefix and a counter (the next id would be known): consecutive ids differ in their
    # first eight digits as random ones do (49 pairs alike by chance: about 1 in 10**8).
    assert sum(a[:8] == b[:8] for a, b in itertools.pairwise(ids)) == 0


def test_the_upstreams_request_id_is_replaced_by_ours(gw: GatewayProcess) -> None:
    response = httpx.get(
        f"{gw.url}/__stub/headers",
        params={"X-Request-Id": "upstream-own", "X-Other": "kept"},
        headers={**gw.auth, "X-Request-Id": "client-own"},
    )
    assert response.headers.get_list("x-request-id") == ["client-own"]
    assert response.headers["x-other"] == "kept"


# ------------------------------------------------------------------------------ configuration


def test_access_log_off(gateway_factory: GatewayFactory) -> None:
    server = gateway_factory({"logging": {"level": "info", "access": False}})
    response = httpx.get(f"{server.url}/x", headers=server.auth)
    assert response.status_code == 200 and response.headers["x-request-id"]
    server.stop()  # shutdown writes any pending line: the stdout seen now is all there is
    assert server.stdout == ""


def test_no_secret_in_any_output(gw: GatewayProcess) -> None:
    created = cli_json(gw, "keys", "create", "--user", gw.user_id)
    key = created["key"]
    answers = [
        httpx.get(f"{gw.url}/x", headers={"Authorization": f"Bearer {key}"}),
        httpx.get(f"{gw.url}/x", headers={"Authorization": f"Bearer {key[:-1]}x"}),
    ]
    cli_json(gw, "keys", "revoke", created["id"])
    answers.append(httpx.get(f"{gw.url}/x", headers={"Authorization": f"Bearer {key}"}))
    assert [answer.status_code for answer in answers] == [200, 401, 401]
    for answer in answers:
        gw.access_entry(answer.headers["x-request-id"])
    output = gw.stdout + gw.log
    assert key[:-1] not in output and hash_key(key.encode()) not in output
    assert created["id"] in gw.stdout  # the key's id is what identifies it in the log
