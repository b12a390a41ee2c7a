"""Key guessing: every failure looks the same, and one address cannot keep trying."""

from __future__ import annotations

import contextlib

import httpx

from gateway.auth.keys import generate_key
from tests.conftest import GatewayFactory
from tests.rawhttp import connect, read_response
from tests.servers import cli_json, samples

# One sample per key look-up that reached the store.
STORE_LOOKUPS = ("gateway_store_query_seconds_count", ())


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

    def guess() -> dict[str, str]:
        return {"Authorization": f"Bearer {generate_key(gw.config.keys.prefix)}"}

    with httpx.Client(base_url=gw.url) as client:
        assert client.get("/x", headers=attacker | gw.auth).status_code == 200  # cached as good from now on
        assert [client.get("/x", headers=attacker | guess()).status_code for _ in range(3)] == [401, 401, 401]
        throttled = client.get("/x", headers=attacker | guess())
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        assert throttled.json()["error"]["code"] == "rate_limited"
        # Only look-ups of unknown keys are throttled: the address's good key, whose verdict is
        # cached, and a request without any key are answered as always (one bad client behind
        # a NAT does not lock out the others).
        assert client.get("/x", headers=attacker | gw.auth).status_code == 200
        assert client.get("/x", headers=attacker).status_code == 401
        # Another address is not slowed, and its own failures are its own.
        assert client.get("/x", headers=bystander | guess()).status_code == 401
        assert client.get("/x", headers=bystander | gw.auth).status_code == 200
    assert gw.access_entry(throttled.headers["x-request-id"])["outcome"] == "auth_throttled"


def test_concurrent_guesses_cannot_outrun_the_throttle(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"auth_failures": {"limit": "5/minute"}}, admin=True)
    looked_up = samples(gw)[STORE_LOOKUPS]
    guesses = [generate_key(gw.config.keys.prefix).encode() for _ in range(60)]
    with contextlib.ExitStack() as opened:
        socks = [opened.enter_context(connect(gw.port)) for _ in guesses]
        # Every guess is on its way before the first is answered.
        for sock, guess in zip(socks, guesses, strict=True):
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + guess + b"\r\n\r\n")
        statuses = [read_response(sock)[0] for sock in socks]
    looked_up = samples(gw)[STORE_LOOKUPS] - looked_up
    assert looked_up <= 5, f"{looked_up:.0f} store look-ups for 60 guesses at once from one address"
    assert statuses.count(401) <= 5 and statuses.count(429) == 60 - statuses.count(401), statuses


def test_a_throttled_address_keeps_its_known_key_and_is_not_refused_without_one(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory({"auth_failures": {"limit": "5/minute"}})
    with httpx.Client(base_url=gw.url) as client:
        assert client.get("/x", headers=gw.auth).status_code == 200  # a good key, now known to the gateway
        guesses = [{"Authorization": f"Bearer {generate_key(gw.config.keys.prefix)}"} for _ in range(6)]
        assert [client.get("/x", headers=guess).status_code for guess in guesses] == [401] * 5 + [429]
        # The address is throttled: its guesses are. Its own key, known good before, is not a guess...
        assert client.get("/x", headers=gw.auth).status_code == 200
        # ... and a request without any key guesses nothing: it gets the usual 401.
        missing = client.get("/x")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_credentials"
