"""Rate-limit windows counted in memory (the embedded defaults: one process, SQLite, no Redis)
outlive a restart: real gateway processes, a real SIGTERM and a real SIGKILL."""

from __future__ import annotations

import asyncio
import time

import httpx

from gateway.store import WindowCount, open_store
from tests.conftest import GatewayFactory
from tests.servers import GatewayProcess

DAY_LIMIT = {"rate_limits": {"default": ["100/minute", "3/day"]}}


def get(gateway: GatewayProcess) -> httpx.Response:
    return httpx.get(gateway.url + "/api/v1/templates", headers=gateway.auth)


def saved_windows(gateway: GatewayProcess) -> list[WindowCount]:
    async def load() -> list[WindowCount]:
        store = await open_store(gateway.config.store.url)
        try:
            return list(await store.load_windows(time.time()))
        finally:
            await store.close()

    return asyncio.run(load())


def test_a_key_at_its_day_limit_is_still_at_it_after_a_restart(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(DAY_LIMIT)
    answers = [get(gw) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    reset = answers[-1].headers["x-ratelimit-reset"]
    gw.stop()  # SIGTERM: the windows are saved on the way out

    restarted = GatewayProcess.restart(gw)
    try:
        denied = get(restarted)
        assert denied.status_code == 429
        assert denied.headers["x-ratelimit-limit"] == "3"
        assert denied.headers["x-ratelimit-remaining"] == "0"
        assert denied.headers["x-ratelimit-reset"] == reset  # the same window, not a new one
    finally:
        restarted.stop()


def test_a_sigkill_loses_no_more_than_the_counts_since_the_last_flush(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(DAY_LIMIT | {"usage": {"flush_seconds": 0.2}})
    assert [get(gw).status_code for _ in range(2)] == [200, 200]
    # Bounded wait for the flush that saves both requests' windows (each flush is 0.2 s apart).
    deadline = time.monotonic() + 10
    while not any(w.spec == "3/86400" and w.hits == 2 for w in saved_windows(gw)):
        assert time.monotonic() < deadline, "the windows were never saved"
        time.sleep(0.05)
    gw.process.kill()
    gw.process.wait(10)

    restarted = GatewayProcess.restart(gw)
    try:
        one_more = get(restarted)
        assert one_more.status_code == 200
        assert one_more.headers["x-ratelimit-remaining"] == "0"  # 2 before the kill, this is the 3rd
        assert get(restarted).status_code == 429
    finally:
        restarted.stop()
