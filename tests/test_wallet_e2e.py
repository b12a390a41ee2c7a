"""The credit wallet end to end: a real gateway process in front of the stub, concurrent clients,
the operator's CLI, a restart."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.conftest import GatewayFactory
from tests.servers import GatewayProcess, cli_json as cli, store_locked

GENERATE = "/api/v1/mockups/generate"
ORDER = {"template_id": "tpl_mug", "artwork_url": "https://example.com/a.png"}
WALLET = {
    "credits": {"wallet": True},
    "errors": {"profile": "mockupanda"},
    "usage": {"flush_seconds": "100ms"},
    "limits": {"max_concurrent_per_key": 1000, "max_concurrent_per_user": 1000, "max_connections_per_address": 1000},
}


def generate(gateway: GatewayProcess) -> httpx.Response:
    return httpx.post(gateway.url + GENERATE, headers=gateway.auth, json=ORDER)


def balance(gateway: GatewayProcess) -> int:
    return int(cli(gateway, "users", "credits", gateway.user_id)["balance"])


def until_balance(gateway: GatewayProcess, expected: int) -> None:
    """Wait (bounded) for the spent credits to be written: the CLI reads the store."""
    deadline = time.monotonic() + 10
    while balance(gateway) != expected:
        assert time.monotonic() < deadline, f"the balance never reached {expected}"


def test_200_concurrent_costed_requests_against_a_balance_of_50(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(WALLET)
    assert cli(gw, "users", "credits", gw.user_id, "--set", "50") == {"user_id": gw.user_id, "balance": 50}

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=gw.url, headers=gw.auth, limits=limits, timeout=30) as client:
            return await asyncio.gather(*(client.post(GENERATE, json=ORDER) for _ in range(200)))

    answers = asyncio.run(burst())
    assert sorted(a.status_code for a in answers) == [201] * 50 + [402] * 150
    refused = next(a for a in answers if a.status_code == 402)
    assert refused.json() == {
        "error": "Insufficient credits",
        "code": "INSUFFICIENT_CREDITS",
        "details": {"required": 1, "balance": 0},
    }
    assert refused.headers["x-credits-remaining"] == "0"
    assert all("x-credits-remaining" in a.headers for a in answers)
    until_balance(gw, 0)
    # Free routes are not refused, nor do they carry the header.
    free = httpx.get(gw.url + "/api/v1/templates", headers=gw.auth)
    assert free.status_code == 200 and "x-credits-remaining" not in free.headers
    today = time.strftime("%Y-%m-%d", time.gmtime())
    usage = cli(gw, "usage", "--user", gw.user_id, "--daily", "--from", today)
    assert usage["totals"]["refused_credits"] == 150 and usage["totals"]["credits"] == 50


def test_the_balance_outlives_a_restart_and_an_operators_top_up_counts_at_once(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory(WALLET)
    cli(gw, "users", "credits", gw.user_id, "--set", "2")
    assert [generate(gw).status_code for _ in range(3)] == [201, 201, 402]
    gw.stop()  # SIGTERM: what was spent is written first
    assert balance(gw) == 0
    restarted = GatewayProcess.restart(gw)
    try:
        assert generate(restarted).status_code == 402
        cli(gw, "users", "credits", gw.user_id, "--add", "1")
        answer = generate(restarted)
        assert answer.status_code == 201 and answer.headers["x-credits-remaining"] == "0"
    finally:
        restarted.stop()


def test_credits_spent_while_the_store_is_locked_are_written_once_it_answers(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(WALLET | {"store": {"lookup_timeout": "300ms"}})
    cli(gw, "users", "credits", gw.user_id, "--set", "5")
    assert generate(gw).status_code == 201  # the key and the balance are read: from here, memory
    with store_locked(gw):
        # Paid from the balance in memory; each flush meanwhile fails and keeps what was spent.
        assert [generate(gw).status_code for _ in range(5)] == [201, 201, 201, 201, 402]
        assert gw.wait_for_log("could not write usage to the store")
    until_balance(gw, 0)
    history = cli(gw, "usage", "--user", gw.user_id, "--daily")
    assert history["totals"]["credits"] == 5 and history["totals"]["refused_credits"] == 1
