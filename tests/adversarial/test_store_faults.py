"""The key store fails under a running gateway: a real lock on the real SQLite file, held by
another process (this one), as a backup tool or a stuck writer would hold it."""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.keys import generate_key
from tests.conftest import GatewayFactory
from tests.servers import GatewayProcess, ServerProcess, cli_json, gateway_cli, received_ids

# SQLite's WAL-index locks are fcntl locks on bytes 120 to 127 of the -shm file; holding them all
# keeps every other process from starting a read or a write.
WAL_LOCKS = (120, 8)


@contextlib.contextmanager
def store_locked(gateway: GatewayProcess) -> Iterator[None]:
    database = gateway.config.store.url.removeprefix("sqlite:///")
    fd = os.open(database + "-shm", os.O_RDWR)
    try:
        start, length = WAL_LOCKS
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
        yield
    finally:
        os.close(fd)  # releases the lock


def test_a_locked_store(gateway_factory: GatewayFactory, stub: ServerProcess, request: pytest.FixtureRequest) -> None:
    gw = gateway_factory({"usage": {"flush_seconds": "100ms"}, "store": {"lookup_timeout": "300ms"}}, admin=True)
    admin = httpx.Client(base_url=gw.admin_url or "", headers={"Authorization": f"Bearer {gw.ADMIN_TOKEN}"}, timeout=30)
    request.addfinalizer(admin.close)
    uncached = cli_json(gw, "keys", "create", "--user", gw.user_id)
    uncached_auth = {"Authorization": f"Bearer {uncached['key']}"}
    # After the last write: a write empties the cache.
    assert httpx.get(f"{gw.url}/x", headers=gw.auth).status_code == 200

    with store_locked(gw), concurrent.futures.ThreadPoolExecutor(2) as pool:
        # Writes through the admin API and the CLI, under way while the public requests run.
        admin_write = pool.submit(admin.post, "/admin/v1/keys", json={"user_id": gw.user_id})
        cli_write = pool.submit(gateway_cli, gw.config_path, "keys", "revoke", gw.key_id)

        answers = [httpx.get(f"{gw.url}/x", headers=gw.auth | {"X-Request-Id": f"cached-{i}"}) for i in range(3)]
        assert [answer.status_code for answer in answers] == [200, 200, 200]

        refused = httpx.get(f"{gw.url}/x", headers=uncached_auth | {"X-Request-Id": "uncached-locked"})
        assert refused.status_code == 503
        assert refused.json() == {
            "error": {"code": "service_unavailable", "message": "The service is temporarily unavailable"}
        }
        assert refused.headers["retry-after"] == "5" and refused.headers["cache-control"] == "no-store"
        assert "uncached-locked" not in received_ids(stub)

        written = admin_write.result()
        assert written.status_code == 503 and written.json()["error"]["code"] == "store_unavailable"
        revoked = cli_write.result()
        assert revoked.returncode != 0 and len(revoked.stderr.strip().splitlines()) == 1, revoked.stderr

    # Recovered: the failure was not remembered as "unknown key", and the revocation that failed
    # was not applied behind anyone's back.
    assert httpx.get(f"{gw.url}/x", headers=uncached_auth).status_code == 200
    assert httpx.get(f"{gw.url}/x", headers=gw.auth).status_code == 200
    # The four requests of the cached key before and during the lock, and the one after, were
    # counted in memory and written once the store took writes again.
    deadline = time.monotonic() + 10
    while cli_json(gw, "keys", "show", gw.key_id)["requests"] != 5:
        assert time.monotonic() < deadline, "usage counted during the lock never reached the store"
    assert "the key store cannot be read" in gw.log and "the key store answers again" in gw.log
    assert uncached["key"] not in gw.log + gw.stdout


def test_a_known_key_outlives_its_cache_ttl_while_the_store_is_locked(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"cache": {"ttl_seconds": "200ms"}, "store": {"lookup_timeout": "300ms"}})
    assert httpx.get(f"{gw.url}/x", headers=gw.auth).status_code == 200
    with store_locked(gw):
        # The cached verdict's time is up: the next request looks the key up, and the store fails.
        time.sleep(0.3)
        assert httpx.get(f"{gw.url}/x", headers=gw.auth).status_code == 200
        unknown = {"Authorization": f"Bearer {generate_key(gw.config.keys.prefix)}"}
        assert httpx.get(f"{gw.url}/x", headers=unknown).status_code == 503
    assert "the key store cannot be read" in gw.log
