"""The key store fails under a running gateway: a real lock on the real SQLite file, held by
another process (this one), as a backup tool or a stuck writer would hold it."""

from __future__ import annotations

import concurrent.futures
import errno
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.auth.keys import generate_key
from tests.conftest import GatewayFactory
from tests.servers import ServerProcess, cli_json, free_port, gateway_cli, received_ids, store_locked


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
    assert gw.wait_for_log("the key store cannot be read") and gw.wait_for_log("the key store answers again")
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
    assert gw.wait_for_log("the key store cannot be read")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of 8 MiB of its own (tmpfs), to fill up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a full disk needs a small file system of its own: mount failed: {mounted.stderr.strip()!r}")
    yield mount
    # Lazy: the module's gateways, which hold the store open, are stopped after this.
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_full_disk(gateway_factory: GatewayFactory, small_disk: Path, request: pytest.FixtureRequest) -> None:
    gw = gateway_factory(
        {"usage": {"flush_seconds": "100ms"}, "store": {"url": f"sqlite:///{small_disk}/gateway.db"}}, admin=True
    )
    admin = httpx.Client(base_url=gw.admin_url or "", headers={"Authorization": f"Bearer {gw.ADMIN_TOKEN}"}, timeout=30)
    request.addfinalizer(admin.close)
    uncached = cli_json(gw, "keys", "create", "--user", gw.user_id)
    assert httpx.get(f"{gw.url}/x", headers=gw.auth).status_code == 200

    filler = fill(small_disk)
    # A full disk stops writes, not reads: every key is still checked as it should be.
    assert [httpx.get(f"{gw.url}/x", headers=gw.auth).status_code for _ in range(3)] == [200, 200, 200]
    assert httpx.get(f"{gw.url}/x", headers={"Authorization": f"Bearer {uncached['key']}"}).status_code == 200
    written = admin.post("/admin/v1/keys", json={"user_id": gw.user_id})
    assert written.status_code == 503 and written.json()["error"]["code"] == "store_unavailable"
    revoked = gateway_cli(gw.config_path, "keys", "revoke", gw.key_id)
    assert revoked.returncode != 0 and len(revoked.stderr.strip().splitlines()) == 1, revoked.stderr
    assert gw.wait_for_log("could not write usage to the store, will retry"), gw.log

    filler.unlink()
    # The revocation that failed did not happen; the counts held in memory reach the store.
    assert httpx.get(f"{gw.url}/x", headers=gw.auth).status_code == 200
    deadline = time.monotonic() + 10
    while cli_json(gw, "keys", "show", gw.key_id)["requests"] != 5:
        assert time.monotonic() < deadline, "usage counted while the disk was full never reached the store"
    assert cli_json(gw, "keys", "show", uncached["id"])["requests"] == 1
    assert len(cli_json(gw, "keys", "list", "--user", gw.user_id)) == 2
    assert gw.wait_for_log("usage written to the store again")
    assert gw.log.count("could not write usage to the store") == 1


def test_a_read_only_store(small_disk: Path, tmp_path: Path) -> None:
    # Linux will not make a file system read-only while a process holds a file on it open for
    # writing, as the gateway does: a read-only store is one the gateway or the CLI meets at start.
    config = tmp_path / "gateway.yaml"
    config.write_text(f"store:\n  url: sqlite:///{small_disk}/gateway.db\nupstream:\n  url: http://127.0.0.1:9\n")
    assert gateway_cli(config, "users", "add", "bob").returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)

    lapsed = gateway_cli(config, "users", "set-subscription", "bob", "inactive")
    assert lapsed.returncode != 0 and len(lapsed.stderr.strip().splitlines()) == 1, lapsed.stderr
    served = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode != 0
    assert f"cannot start: sqlite:///{small_disk}/gateway.db: cannot use the database" in served.stderr
    assert "Traceback" not in served.stderr
