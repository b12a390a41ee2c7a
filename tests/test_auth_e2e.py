"""Authentication end to end: real gateways on real SQLite stores, the CLI in other processes."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from gateway.auth.keys import generate_key
from gateway.manage.service import KeyService
from tests.conftest import GatewayFactory
from tests.rawhttp import exchange
from tests.servers import GatewayProcess, ServerProcess, cli_json as cli, gateway_cli, received_ids

MOCKLY_MISSING = {
    "error": {"code": "invalid_credentials", "message": "Missing API key: send it as 'Authorization: Bearer <key>'"}
}
MOCKLY_INVALID = {"error": {"code": "invalid_credentials", "message": "Invalid or revoked API key"}}
MOCKLY_INACTIVE = {"error": {"code": "subscription_inactive", "message": "The subscription is not active"}}
PANDA_MISSING = {"error": "Authorization header is required", "code": "MISSING_API_KEY"}
PANDA_INVALID = {"error": "Invalid or revoked API key", "code": "INVALID_API_KEY"}
PANDA_INACTIVE = {"error": "Subscription is not active", "code": "SUBSCRIPTION_INACTIVE"}


@pytest.fixture(scope="module")
def panda(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory({"errors": {"profile": "mockupanda"}})


def new_key(gateway: GatewayProcess, user_id: str | None = None, *extra: str) -> dict:
    return cli(gateway, "keys", "create", "--user", user_id or gateway.user_id, *extra)


def get(gateway: GatewayProcess, key: str | None, path: str = "/api/v1/templates", **headers: str) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.get(gateway.url + path, headers=headers)


def refused(response: httpx.Response, status: int, body: dict) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == body
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


# ------------------------------------------------------------------------- the answers


def test_missing_key(gateway: GatewayProcess, panda: GatewayProcess) -> None:
    refused(get(gateway, None), 401, MOCKLY_MISSING)
    refused(get(panda, None), 401, PANDA_MISSING)


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic YWxpY2U6c2VjcmV0", id="basic"),
        pytest.param("Bearer", id="no-token"),
        pytest.param("Bearer ", id="empty-token"),
        pytest.param("Bearer {key} {key}", id="two-tokens"),
        pytest.param("Bearer {key},{key}", id="comma-list"),
        pytest.param("Token {key}", id="other-scheme"),
        pytest.param("{key}", id="no-scheme"),
        pytest.param("Bearer {mistyped}", id="bad-checksum"),
        pytest.param("Bearer {unknown}", id="unknown-key"),
        pytest.param("Bearer {other_prefix}", id="other-prefix"),
    ],
)
def test_invalid_credentials(gateway: GatewayProcess, panda: GatewayProcess, stub, authorization: str) -> None:
    for server, body in ((gateway, MOCKLY_INVALID), (panda, PANDA_INVALID)):
        mistyped = server.key[:-1] + ("a" if server.key[-1] != "a" else "b")
        value = authorization.format(
            key=server.key, mistyped=mistyped, unknown=generate_key("mk_live_"), other_prefix=generate_key("mpa_")
        )
        request_id = uuid.uuid4().hex
        head = f"GET /__stub/echo HTTP/1.1\r\nHost: h\r\nAuthorization: {value}\r\nX-Request-Id: {request_id}\r\n\r\n"
        status, headers, raw = exchange(server.port, head.encode())
        assert (status, json.loads(raw)) == (401, body)
        assert headers[b"www-authenticate"] == b"Bearer"
        assert server.key.encode() not in raw
        assert request_id not in received_ids(stub)


def test_two_authorization_headers_are_an_invalid_key(gateway: GatewayProcess) -> None:
    head = b"GET /api/v1/templates HTTP/1.1\r\nHost: h\r\n" + gateway.auth_line + gateway.auth_line + b"\r\n"
    status, headers, body = exchange(gateway.port, head)
    assert status == 401
    assert json.loads(body) == MOCKLY_INVALID


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_scheme_is_case_insensitive(gateway: GatewayProcess, scheme: str) -> None:
    response = httpx.get(gateway.url + "/api/v1/templates", headers={"Authorization": f"{scheme} {gateway.key}"})
    assert response.status_code == 200


# ------------------------------------------------------------------------- the lifecycle, from other processes


def test_revocation_by_the_cli_fails_the_very_next_request(gateway: GatewayProcess, panda: GatewayProcess) -> None:
    for server, body in ((gateway, MOCKLY_INVALID), (panda, PANDA_INVALID)):
        created = new_key(server)
        for _ in range(3):  # the verdict is cached now (TTL 60 s)
            assert get(server, created["key"]).status_code == 200
        revoked = cli(server, "keys", "revoke", created["id"])
        assert revoked["status"] == "revoked" and revoked["already_revoked"] is False
        refused(get(server, created["key"]), 401, body)
        again = cli(server, "keys", "revoke", created["id"])
        assert again["already_revoked"] is True


def test_a_new_key_works_at_once(gateway: GatewayProcess) -> None:
    assert get(gateway, gateway.key).status_code == 200  # the cache is warm
    created = new_key(gateway, None, "--name", "fresh")
    assert get(gateway, created["key"]).status_code == 200


def test_subscription_lapse_and_reactivation(gateway: GatewayProcess, panda: GatewayProcess) -> None:
    for server, body in ((gateway, MOCKLY_INACTIVE), (panda, PANDA_INACTIVE)):
        user = f"sub-{uuid.uuid4().hex[:8]}"
        cli(server, "users", "add", user)
        created = new_key(server, user)
        assert get(server, created["key"]).status_code == 200
        assert cli(server, "users", "set-subscription", user, "inactive")["subscription"] == "inactive"
        refused(get(server, created["key"]), 403, body)
        cli(server, "users", "set-subscription", user, "active")
        assert get(server, created["key"]).status_code == 200


def test_a_key_created_for_an_inactive_user_is_refused(gateway: GatewayProcess) -> None:
    user = f"inactive-{uuid.uuid4().hex[:8]}"
    cli(gateway, "users", "add", user, "--subscription", "inactive")
    refused(get(gateway, new_key(gateway, user)["key"]), 403, MOCKLY_INACTIVE)


def stops_at(gateway: GatewayProcess, key_id: str) -> float:
    async def read(service: KeyService) -> float:
        key = await service.get_key(key_id)
        assert key.expires_at is not None
        return key.expires_at

    return gateway.run_service(read)


def wait_past(moment: float) -> None:
    """Block until the wall clock has passed ``moment`` (an expiry is an event in time)."""
    time.sleep(max(0.0, moment - time.time()) + 0.05)


def test_expiry(gateway: GatewayProcess) -> None:
    created = new_key(gateway, None, "--expires-in", "1500ms")
    expires_at = stops_at(gateway, created["id"])
    assert time.time() < expires_at
    assert get(gateway, created["key"]).status_code == 200
    wait_past(expires_at)
    refused(get(gateway, created["key"]), 401, MOCKLY_INVALID)
    listed = {k["id"]: k for k in cli(gateway, "keys", "list", "--user", gateway.user_id)}
    assert listed[created["id"]]["status"] == "expired"


def test_rotation_without_grace(gateway: GatewayProcess) -> None:
    old = new_key(gateway, None, "--name", "rotating")
    assert get(gateway, old["key"]).status_code == 200
    new = cli(gateway, "keys", "rotate", old["id"])
    assert (new["user_id"], new["name"], new["replaces"]) == (gateway.user_id, "rotating", old["id"])
    refused(get(gateway, old["key"]), 401, MOCKLY_INVALID)
    assert get(gateway, new["key"]).status_code == 200


def test_rotation_with_grace(gateway: GatewayProcess) -> None:
    old = new_key(gateway)
    new = cli(gateway, "keys", "rotate", old["id"], "--grace", "1500ms")
    grace_ends = stops_at(gateway, old["id"])
    assert get(gateway, old["key"]).status_code == 200
    assert get(gateway, new["key"]).status_code == 200
    wait_past(grace_ends)
    refused(get(gateway, old["key"]), 401, MOCKLY_INVALID)
    assert get(gateway, new["key"]).status_code == 200
    listed = {k["id"]: k for k in cli(gateway, "keys", "list")}
    assert listed[old["id"]]["status"] == "revoked"


# ------------------------------------------------------------------------- what the upstream sees


def test_identity_headers_cannot_be_spoofed(gateway: GatewayProcess) -> None:
    head = (
        b"GET /__stub/echo HTTP/1.1\r\nHost: h\r\n" + gateway.auth_line + b"X-User-Id: mallory\r\n"
        b"x-user-id: mallory2\r\nX-USER-ID: a, b\r\nX_User_Id: mallory3\r\nX.User.Id: mallory4\r\n"
        b"x_user.id: mallory5\r\nX-Api-Key-Id: key_fake\r\nx_api_key_id: key_fake2\r\nX-Other: kept\r\n\r\n"
    )
    status, _, body = exchange(gateway.port, head)
    assert status == 200
    headers = json.loads(body)["headers"]
    assert headers[-3:-1] == [["x-user-id", gateway.user_id], ["x-api-key-id", gateway.key_id]]
    names = [name.replace("_", "-").replace(".", "-") for name, _ in headers]
    assert names.count("x-user-id") == 1 and names.count("x-api-key-id") == 1
    assert ["x-other", "kept"] in headers
    assert "authorization" not in names


def test_identity_header_names_and_authorization_forwarding_are_configurable(gateway_factory: GatewayFactory) -> None:
    custom = gateway_factory(
        {
            "identity_headers": {"user_id": "X-Customer", "key_id": "X-Credential"},
            "upstream": {"forward_authorization": True},
        }
    )
    response = httpx.get(custom.url + "/__stub/echo", headers=custom.auth | {"x_customer": "mallory"})
    headers = response.json()["headers"]
    assert ["authorization", f"Bearer {custom.key}"] in headers
    assert headers[-3:-1] == [["x-customer", custom.user_id], ["x-credential", custom.key_id]]
    assert [name for name, _ in headers].count("x_customer") == 0


# ------------------------------------------------------------------------- CORS


def test_no_cors_on_the_api(gateway: GatewayProcess, stub: ServerProcess) -> None:
    origin = {"Origin": "https://evil.example"}
    assert "access-control-allow-origin" in httpx.get(stub.url + "/api/v1/templates", headers=origin).headers
    through = get(gateway, gateway.key, "/api/v1/templates", **origin)
    assert through.status_code == 200
    assert not [name for name in through.headers if name.startswith("access-control-")]
    # Outside cors.deny_prefixes the upstream's answer is passed as it is.
    assert "access-control-allow-origin" in get(gateway, gateway.key, "/__stub/cookies", **origin).headers


def test_preflight_without_key_is_401(gateway: GatewayProcess) -> None:
    response = httpx.options(
        gateway.url + "/api/v1/templates",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    refused(response, 401, MOCKLY_MISSING)
    assert not [name for name in response.headers if name.startswith("access-control-")]


# ------------------------------------------------------------------------- secrets stay secret


def test_no_key_or_hash_in_the_logs_or_the_store(gateway: GatewayProcess) -> None:
    from gateway.auth.keys import hash_key

    created = new_key(gateway)
    get(gateway, created["key"])
    get(gateway, created["key"][:-1] + "x")
    cli(gateway, "keys", "revoke", created["id"])
    get(gateway, created["key"])
    assert created["key"] not in gateway.log and hash_key(created["key"].encode()) not in gateway.log
    listed = gateway_cli(gateway.config_path, "keys", "list")
    assert created["key"] not in listed.stdout and hash_key(created["key"].encode()) not in listed.stdout
    store_bytes = b"".join(p.read_bytes() for p in gateway.config_path.parent.glob("gateway.db*"))
    assert created["key"].encode() not in store_bytes
    assert hash_key(created["key"].encode()).encode() in store_bytes
