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
from tests.servers import GatewayProcess, ServerProcess, cli_json, received_ids

FIELDS = [
    "ts",
    "request_id",
    "method",
    "path",
    "status",
    "outcome",
    "duration_ms",
    "upstream_ms",
    "key_id",
    "user_id",
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
    assert 0 < entry["upstream_ms"] <= entry["duration_ms"]
    assert entry["ts"].endswith("Z") and len(entry["ts"]) == len("2026-01-01T00:00:00.000Z")
    assert "secret-query" not in gw.stdout


def test_answers_of_the_gateway_itself(gw: GatewayProcess) -> None:
    missing = httpx.get(f"{gw.url}/api/v1/templates")
    wrong = httpx.get(f"{gw.url}/api/v1/templates", headers={"Authorization": "Bearer mk_live_nope"})
    for response, outcome in ((missing, "missing_key"), (wrong, "invalid_key")):
        assert response.status_code == 401
        entry = gw.access_entry(response.headers["x-request-id"])
        assert entry["status"] == 401 and entry["outcome"] == outcome
        assert entry["key_id"] is None and entry["user_id"] is None and entry["upstream_ms"] is None


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
