"""Authentication end to end: real gateways on real SQLite stores, the CLI in other processes.
(The answers themselves, in each profile: test_route.py, in process.)"""

from __future__ import annotations

import json
import time

import httpx
import pytest
import yaml

from gateway.manage.service import ManagementService
from tests.conftest import GatewayFactory
from tests.rawhttp import exchange
from tests.servers import GatewayProcess, cli_json as cli, gateway_cli

MOCKLY_INVALID = {"error": {"code": "invalid_credentials", "message": "Invalid or revoked API key"}}


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory) -> GatewayProcess:
    """One gateway for what does not depend on the upstream client."""
    return gateway_factory()


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


# ------------------------------------------------------------------------- the lifecycle, from other processes


def test_revocation_by_the_cli_fails_the_very_next_request(gw: GatewayProcess) -> None:
    created = new_key(gw)
    for _ in range(3):  # the verdict is cached now (TTL 60 s)
        assert get(gw, created["key"]).status_code == 200
    revoked = cli(gw, "keys", "revoke", created["id"])
    assert revoked["status"] == "revoked" and revoked["already_revoked"] is False
    refused(get(gw, created["key"]), 401, MOCKLY_INVALID)
    again = cli(gw, "keys", "revoke", created["id"])
    assert again["already_revoked"] is True


def test_a_new_key_works_at_once(gw: GatewayProcess) -> None:
    assert get(gw, gw.key).status_code == 200  # the cache is warm
    created = new_key(gw, None, "--name", "fresh")
    assert get(gw, created["key"]).status_code == 200


def stops_at(gateway: GatewayProcess, key_id: str) -> float:
    async def read(service: ManagementService) -> float:
        key = await service.get_key(key_id)
        assert key.expires_at is not None
        return key.expires_at

    return gateway.run_service(read)


def wait_past(moment: float) -> None:
    """Block until the wall clock has passed ``moment`` (an expiry is an event in time)."""
    time.sleep(max(0.0, moment - time.time()) + 0.05)


def test_expiry(gw: GatewayProcess) -> None:
    created = new_key(gw, None, "--expires-in", "1500ms")
    expires_at = stops_at(gw, created["id"])
    assert time.time() < expires_at
    assert get(gw, created["key"]).status_code == 200
    wait_past(expires_at)
    refused(get(gw, created["key"]), 401, MOCKLY_INVALID)
    listed = {k["id"]: k for k in cli(gw, "keys", "list", "--user", gw.user_id)}
    assert listed[created["id"]]["status"] == "expired"


def test_rotation_with_grace(gw: GatewayProcess) -> None:
    old = new_key(gw)
    new = cli(gw, "keys", "rotate", old["id"], "--grace", "1500ms")
    grace_ends = stops_at(gw, old["id"])
    assert get(gw, old["key"]).status_code == 200
    assert get(gw, new["key"]).status_code == 200
    wait_past(grace_ends)
    refused(get(gw, old["key"]), 401, MOCKLY_INVALID)
    assert get(gw, new["key"]).status_code == 200
    listed = {k["id"]: k for k in cli(gw, "keys", "list")}
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


# ------------------------------------------------------------------------- secrets stay secret


def test_no_key_or_hash_in_the_logs_or_the_store(gw: GatewayProcess) -> None:
    from gateway.auth.keys import hash_key

    created = new_key(gw)
    get(gw, created["key"])
    get(gw, created["key"][:-1] + "x")
    cli(gw, "keys", "revoke", created["id"])
    get(gw, created["key"])
    assert created["key"] not in gw.log and hash_key(created["key"].encode()) not in gw.log
    listed = gateway_cli(gw.config_path, "keys", "list")
    assert created["key"] not in listed.stdout and hash_key(created["key"].encode()) not in listed.stdout
    store_bytes = b"".join(p.read_bytes() for p in gw.config_path.parent.glob("gateway.db*"))
    assert created["key"].encode() not in store_bytes
    assert hash_key(created["key"].encode()).encode() in store_bytes


def test_the_mockupanda_profile_mints_its_documented_prefix_and_earlier_keys_keep_working(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory({})
    assert gw.key.startswith("mk_live_")
    gw.stop()
    settings = yaml.safe_load(gw.config_path.read_text())
    gw.config_path.write_text(yaml.safe_dump(settings | {"errors": {"profile": "mockupanda"}}))
    restarted = GatewayProcess.restart(gw)
    try:
        created = cli(restarted, "keys", "create", "--user", gw.user_id)
        assert created["key"].startswith("mpa_") and created["prefix"].startswith("mpa_")
        for key in (created["key"], gw.key):  # the key minted before the profile changed works on
            answer = httpx.get(f"{restarted.url}/api/v1/templates", headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200
        # An earlier-prefix key is still checked to the letter: a wrong checksum never gets in.
        forged = gw.key[:-1] + ("A" if gw.key[-1] != "A" else "B")
        refused = httpx.get(f"{restarted.url}/api/v1/templates", headers={"Authorization": f"Bearer {forged}"})
        assert refused.status_code == 401 and refused.json()["code"] == "INVALID_API_KEY"
    finally:
        restarted.stop()
