"""Key guessing: every failure looks the same, and one address cannot keep trying."""

from __future__ import annotations

import httpx

from gateway.keys import generate_key
from tests.conftest import GatewayFactory
from tests.servers import cli_json


def test_unknown_revoked_and_expired_keys_get_the_same_answer(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    revoked = cli_json(gw, "keys", "create", "--user", gw.user_id)
    cli_json(gw, "keys", "revoke", revoked["id"])
    expired = cli_json(gw, "keys", "create", "--user", gw.user_id, "--expires-in", "1")
    unknown = generate_key(gw.config.keys.prefix)
    malformed = gw.key[:-1] + ("a" if gw.key[-1] != "a" else "b")  # the checksum no longer matches
    # The expiry is a point in time: wait for it on the key's own record.
    while cli_json(gw, "keys", "show", expired["id"])["status"] != "expired":
        pass
    answers = [
        httpx.get(f"{gw.url}/x", headers={"Authorization": f"Bearer {key}"})
        for key in (unknown, revoked["key"], expired["key"], malformed)
    ]
    assert {answer.status_code for answer in answers} == {401}
    assert len({answer.content for answer in answers}) == 1
    shapes = {tuple(name for name in answer.headers if name not in ("date",)) for answer in answers}
    assert len(shapes) == 1
    assert len({answer.headers["x-request-id"] for answer in answers}) == 4


def test_failures_from_one_address_are_throttled(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"auth_failures": {"limit": "3/minute"}, "proxy": {"trusted_peers": ["127.0.0.1"]}})
    attacker = {"X-Forwarded-For": "203.0.113.66"}
    bystander = {"X-Forwarded-For": "198.51.100.7"}
    bad = {"Authorization": f"Bearer {generate_key(gw.config.keys.prefix)}"}
    with httpx.Client(base_url=gw.url) as client:
        assert [client.get("/x", headers=attacker | bad).status_code for _ in range(3)] == [401, 401, 401]
        throttled = client.get("/x", headers=attacker | bad)
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        assert throttled.json()["error"]["code"] == "rate_limited"
        # Even a valid key: from this address, a guess and a hit cannot be told apart.
        hit = client.get("/x", headers=attacker | gw.auth)
        assert hit.status_code == 429
        # Another address is not slowed, and its own failures are its own.
        assert client.get("/x", headers=bystander | gw.auth).status_code == 200
        assert client.get("/x", headers=bystander | bad).status_code == 401
        # A request without any key is not a guess: it is not counted.
        for _ in range(5):
            assert client.get("/x", headers=bystander).status_code == 401
        assert client.get("/x", headers=bystander | gw.auth).status_code == 200
    for answer in (throttled, hit):
        assert gw.access_entry(answer.headers["x-request-id"])["outcome"] == "auth_throttled"
