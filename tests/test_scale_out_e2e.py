"""Several gateway replicas sharing Redis and PostgreSQL: one limit for all of them, changes that
count on the next request everywhere, usage that adds up, and the documented answers when Redis
or PostgreSQL fails: servers of the test's own stopped and started again for real, and the
machine's shared ones cut off by the fault-injecting proxy."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.store.schema import SCHEMA_VERSION
from tests.adversarial.fault_proxy import FaultProxy
from tests.conftest import GatewayFactory
from tests.servers import GatewayProcess, cli_json, free_port, gateway_cli, samples
from tests.services import REDIS_HOST, PostgresServer, RedisServer, machine_redis_url, postgres_schema


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def replica(gw: GatewayProcess, request: pytest.FixtureRequest) -> GatewayProcess:
    other = GatewayProcess.restart(gw)
    request.addfinalizer(other.stop)
    return other


def simultaneous(requests: list[tuple[str, dict[str, str]]]) -> list[int]:
    """Send every request at the same moment, each on a connection of its own; their statuses."""
    start = threading.Barrier(len(requests))

    def send(url: str, headers: dict[str, str]) -> int:
        with httpx.Client(timeout=30) as client:
            start.wait()
            return client.get(url, headers=headers).status_code

    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda args: send(*args), requests))


def test_a_limit_is_exact_across_two_replicas(gateway_factory: GatewayFactory, request: pytest.FixtureRequest) -> None:
    a = gateway_factory({"redis": {"url": machine_redis_url()}})
    b = replica(a, request)
    key = cli_json(a, "keys", "create", "--user", a.user_id, "--rate-limit", "10/minute")
    auth = {"Authorization": f"Bearer {key['key']}"}
    statuses = simultaneous([(f"{(a, b)[i % 2].url}/x", auth) for i in range(30)])
    assert sorted(statuses) == [200] * 10 + [429] * 20
    # Both replicas see the same full window.
    assert httpx.get(f"{a.url}/x", headers=auth).status_code == 429
    assert httpx.get(f"{b.url}/x", headers=auth).status_code == 429


def test_a_user_limit_is_exact_across_two_replicas_and_all_its_keys(
    gateway_factory: GatewayFactory, request: pytest.FixtureRequest
) -> None:
    a = gateway_factory({"redis": {"url": machine_redis_url()}, "rate_limits": {"per_user": ["12/minute"]}})
    b = replica(a, request)
    keys = [cli_json(a, "keys", "create", "--user", a.user_id)["key"] for _ in range(3)]
    requests = [(f"{(a, b)[i % 2].url}/x", {"Authorization": f"Bearer {keys[i % 3]}"}) for i in range(36)]
    assert sorted(simultaneous(requests)) == [200] * 12 + [429] * 24
    denied = httpx.get(f"{b.url}/x", headers={"Authorization": f"Bearer {keys[0]}"})
    assert denied.status_code == 429 and "per 60s" in denied.json()["error"]["message"]


def test_a_wallet_is_exact_across_two_replicas(gateway_factory: GatewayFactory, request: pytest.FixtureRequest) -> None:
    limits = {"max_concurrent_per_key": 1000, "max_concurrent_per_user": 1000, "max_connections_per_address": 1000}
    a = gateway_factory(
        {
            # A Redis slow to answer on a loaded machine would make the wallet go local (on_failure:
            # open), as it should, and the count inexact: that is not what this test is about.
            "redis": {"url": machine_redis_url(), "timeout": "5s"},
            "credits": {"wallet": True},
            "limits": limits,
            "usage": {"flush_seconds": "100ms"},
        }
    )
    b = replica(a, request)
    assert cli_json(a, "users", "credits", a.user_id, "--set", "30")["balance"] == 30
    order = {"template_id": "tpl_mug", "artwork_url": "https://example.com/a.png"}

    def generate(url: str) -> int:
        return httpx.post(f"{url}/api/v1/mockups/generate", headers=a.auth, json=order, timeout=30).status_code

    start = threading.Barrier(120)

    def together(url: str) -> int:
        start.wait()
        return generate(url)

    with concurrent.futures.ThreadPoolExecutor(120) as pool:
        statuses = list(pool.map(together, [(a, b)[i % 2].url for i in range(120)]))
    assert sorted(statuses) == [201] * 30 + [402] * 90
    deadline = time.monotonic() + 10
    while cli_json(a, "users", "credits", a.user_id)["balance"] != 0:  # both replicas' spending written
        assert time.monotonic() < deadline, "the spent credits never reached the store"
    # An operator's top-up counts at once on both replicas, and only once.
    cli_json(a, "users", "credits", a.user_id, "--add", "1")
    assert sorted([generate(a.url), generate(b.url)]) == [201, 402]


def test_redis_down_fails_open_and_counts_nothing_twice(
    gateway_factory: GatewayFactory, own_redis: RedisServer
) -> None:
    cut = FaultProxy(own_redis.port)
    try:
        gw = gateway_factory(
            {"redis": {"url": f"redis://{REDIS_HOST}:{cut.port}/0"}, "rate_limits": {"default": ["5/minute"]}},
            admin=True,
        )
        metrics = {"Authorization": f"Bearer {gw.ADMIN_TOKEN}"}
        assert [httpx.get(f"{gw.url}/x", headers=gw.auth).status_code for _ in range(2)] == [200, 200]

        cut.inject("reset")
        # Limits per process now: a fresh in-memory window of 5.
        assert [httpx.get(f"{gw.url}/x", headers=gw.auth).status_code for _ in range(3)] == [200] * 3
        assert gw.wait_for_log("Redis cannot be used")
        assert "gateway_redis_degraded 1.0" in httpx.get(f"{gw.admin_url}/metrics", headers=metrics).text

        cut.heal()
        assert gw.wait_for_log("Redis answers again", timeout=10)
        # Redis still counts the 2 it saw; the 3 counted in memory are not added to them.
        statuses = [httpx.get(f"{gw.url}/x", headers=gw.auth).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert "gateway_redis_degraded 0.0" in httpx.get(f"{gw.admin_url}/metrics", headers=metrics).text
    finally:
        cut.close()


def test_redis_stopped_with_on_failure_closed_is_a_503_until_it_is_back(
    gateway_factory: GatewayFactory, own_redis: RedisServer
) -> None:
    gw = gateway_factory({"redis": {"url": own_redis.url, "on_failure": "closed"}})
    assert httpx.get(f"{gw.url}/x", headers=gw.auth).status_code == 200

    own_redis.stop()
    refused = httpx.get(f"{gw.url}/x", headers=gw.auth)
    assert refused.status_code == 503
    message = "The service is temporarily unavailable"
    assert refused.json() == {"error": {"code": "service_unavailable", "message": message}}
    assert refused.headers["retry-after"] == "1" and refused.headers["cache-control"] == "no-store"
    # The CLI will not write what it cannot announce to the other replicas.
    revoked = gateway_cli(gw.config_path, "keys", "revoke", gw.key_id)
    assert revoked.returncode == 1 and len(revoked.stderr.strip().splitlines()) == 1, revoked.stderr
    assert "nothing was changed" in revoked.stderr

    own_redis.start()
    assert gw.wait_for_log("Redis answers again", timeout=10)
    assert httpx.get(f"{gw.url}/x", headers=gw.auth).status_code == 200
    assert cli_json(gw, "keys", "show", gw.key_id)["status"] == "active"


# ------------------------------------------------------------------ on PostgreSQL and Redis


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def test_a_change_on_one_replica_counts_on_the_next_request_on_the_other(
    gateway_factory: GatewayFactory, postgres_url: str, request: pytest.FixtureRequest
) -> None:
    a = gateway_factory({"store": {"url": postgres_url}, "redis": {"url": machine_redis_url()}}, admin=True)
    b = replica(a, request)
    admin = {"Authorization": f"Bearer {a.ADMIN_TOKEN}"}
    for gw in (a, b):  # both have the verdict cached now
        assert httpx.get(f"{gw.url}/x", headers=a.auth).status_code == 200

    changed = httpx.put(
        f"{a.admin_url}/admin/v1/keys/{a.key_id}/rate-limits", json={"rate_limits": ["7/minute"]}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert httpx.get(f"{b.url}/x", headers=a.auth).headers["x-ratelimit-limit"] == "7"

    lapsed = gateway_cli(a.config_path, "users", "set-subscription", a.user_id, "inactive")
    assert lapsed.returncode == 0, lapsed.stderr
    assert httpx.get(f"{a.url}/x", headers=a.auth).status_code == 403
    assert httpx.get(f"{b.url}/x", headers=a.auth).status_code == 403
    assert gateway_cli(a.config_path, "users", "set-subscription", a.user_id, "active").returncode == 0
    assert httpx.get(f"{b.url}/x", headers=a.auth).status_code == 200

    revoked = httpx.delete(f"{a.admin_url}/admin/v1/keys/{a.key_id}", headers=admin)
    assert revoked.status_code == 204, revoked.text
    assert httpx.get(f"{b.url}/x", headers=a.auth).status_code == 401


def test_two_replicas_of_two_workers_each_behave_as_one(
    gateway_factory: GatewayFactory, postgres_url: str, request: pytest.FixtureRequest
) -> None:
    settings = {"store": {"url": postgres_url}, "redis": {"url": machine_redis_url()}}
    a = gateway_factory(settings, workers=2, admin=True)
    b = replica(a, request)
    assert a.wait_for_log("started 2 workers")
    key = cli_json(a, "keys", "create", "--user", a.user_id, "--rate-limit", "20/minute")
    auth = {"Authorization": f"Bearer {key['key']}"}
    statuses = simultaneous([(f"{(a, b)[i % 2].url}/x", auth) for i in range(60)])
    assert sorted(statuses) == [200] * 20 + [429] * 40
    # One scrape reaches one of a's workers, and counts both: the 30 requests a got.
    deadline = time.monotonic() + 10
    expected = {"forwarded": statuses[::2].count(200), "rate_limited": statuses[::2].count(429)}
    expected = {outcome: count for outcome, count in expected.items() if count}
    while (counted := outcomes(a)) != expected:
        assert time.monotonic() < deadline, f"/metrics counts {counted}, not {expected}"
    # Every worker of both has the other key's verdict cached after a few requests each...
    assert set(simultaneous([(f"{(a, b)[i % 2].url}/x", a.auth) for i in range(16)])) == {200}
    # ...and a revocation counts on the very next request, whichever worker takes it.
    assert gateway_cli(a.config_path, "keys", "revoke", a.key_id).returncode == 0
    assert set(simultaneous([(f"{(a, b)[i % 2].url}/x", a.auth) for i in range(16)])) == {401}
    for gw in (a, b):
        gw.stop()
    assert cli_json(a, "keys", "show", key["id"])["requests"] == 20
    assert cli_json(a, "keys", "show", key["id"])["rate_limited"] == 40
    assert cli_json(a, "keys", "show", a.key_id)["requests"] == 16


def outcomes(gw: GatewayProcess) -> dict[str, int]:
    """The non-zero gateway_requests_total counts on ``gw``'s /metrics, by outcome (every status class)."""
    counts: dict[str, int] = {}
    for (name, labels), value in samples(gw).items():
        if name == "gateway_requests_total" and value:
            outcome = dict(labels)["outcome"]
            counts[outcome] = counts.get(outcome, 0) + int(value)
    return counts


def test_usage_from_two_replicas_adds_up(
    gateway_factory: GatewayFactory, postgres_url: str, request: pytest.FixtureRequest
) -> None:
    a = gateway_factory({"store": {"url": postgres_url}, "redis": {"url": machine_redis_url()}})
    b = replica(a, request)
    statuses = simultaneous([(f"{(a, b)[i % 2].url}/x", a.auth) for i in range(40)])
    assert statuses == [200] * 40
    for gw in (a, b):
        gw.stop()  # SIGTERM: each writes what it counted
    assert cli_json(a, "keys", "show", a.key_id)["requests"] == 40


def test_postgres_unreachable(gateway_factory: GatewayFactory, postgres_url: str) -> None:
    cut = FaultProxy(5432)
    gw: GatewayProcess | None = None
    try:
        behind = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{cut.port}")
        first = gateway_factory(
            {"store": {"url": behind, "lookup_timeout": "500ms"}, "usage": {"flush_seconds": "100ms"}}
        )
        uncached = cli_json(first, "keys", "create", "--user", first.user_id)
        # Started after the last write: no notification of it can arrive late and empty the cache
        # (rightly) just as the store is cut off.
        first.stop()
        gw = GatewayProcess.restart(first)
        assert httpx.get(f"{gw.url}/x", headers=gw.auth).status_code == 200

        cut.inject("reset")  # every connection cut, and every new one refused
        assert [httpx.get(f"{gw.url}/x", headers=gw.auth).status_code for _ in range(3)] == [200] * 3
        refused = httpx.get(f"{gw.url}/x", headers={"Authorization": f"Bearer {uncached['key']}"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert gw.wait_for_log("could not write usage to the store, will retry")

        cut.heal()
        # The pool reconnects by itself; the counts held in memory reach the store.
        assert httpx.get(f"{gw.url}/x", headers={"Authorization": f"Bearer {uncached['key']}"}).status_code == 200
        deadline = time.monotonic() + 10
        while cli_json(gw, "keys", "show", gw.key_id)["requests"] != 4:
            assert time.monotonic() < deadline, "usage counted while the store was cut off never reached it"
    finally:
        if gw is not None:
            gw.stop()
        cut.close()


def test_replicas_starting_together_migrate_a_new_postgres_store_once(postgres_url: str, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"store:\n  url: {postgres_url}\nupstream:\n  url: http://127.0.0.1:9\n")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: gateway_cli(config, "db", "migrate", "--json"), range(4)))
    assert [run.returncode for run in runs] == [0] * 4, [run.stderr for run in runs]
    assert {json.loads(run.stdout)["schema_version"] for run in runs} == {SCHEMA_VERSION}
    assert gateway_cli(config, "users", "add", "bob").returncode == 0


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.close()


def test_postgres_stopped_and_started_again(gateway_factory: GatewayFactory, own_postgres: PostgresServer) -> None:
    gw = gateway_factory(
        {"store": {"url": own_postgres.url, "lookup_timeout": "500ms"}, "usage": {"flush_seconds": "100ms"}}
    )
    uncached = {"Authorization": f"Bearer {cli_json(gw, 'keys', 'create', '--user', gw.user_id)['key']}"}
    assert httpx.get(f"{gw.url}/x", headers=gw.auth).status_code == 200

    own_postgres.stop()
    assert [httpx.get(f"{gw.url}/x", headers=gw.auth).status_code for _ in range(3)] == [200] * 3
    refused = httpx.get(f"{gw.url}/x", headers=uncached)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert gw.wait_for_log("could not write usage to the store, will retry")
    revoked = gateway_cli(gw.config_path, "keys", "revoke", gw.key_id)
    assert revoked.returncode == 1 and len(revoked.stderr.strip().splitlines()) == 1, revoked.stderr

    own_postgres.start()
    # The pool reconnects by itself, the held counts are written, and the revocation that failed
    # did not happen.
    assert httpx.get(f"{gw.url}/x", headers=uncached).status_code == 200
    deadline = time.monotonic() + 10
    while cli_json(gw, "keys", "show", gw.key_id)["requests"] != 4:
        assert time.monotonic() < deadline, "usage counted while the store was down never reached it"
    assert cli_json(gw, "keys", "show", gw.key_id)["status"] == "active"
    assert gw.wait_for_log("the store's change notifications are back")


def test_a_worker_that_ends_is_replaced_and_its_counts_kept(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"redis": {"url": machine_redis_url()}}, workers=2, admin=True)
    assert gw.wait_for_log("started 2 workers: ")
    [first, second] = re.findall(r"started 2 workers: (\d+), (\d+)", gw.log)[0]

    def served(count: int) -> None:
        with httpx.Client(base_url=gw.url, headers=gw.auth) as client:
            assert {client.get("/x").status_code for _ in range(count)} == {200}

    def forwarded_reaches(total: int) -> None:
        deadline = time.monotonic() + 10
        while outcomes(gw).get("forwarded") != total:
            assert time.monotonic() < deadline, outcomes(gw)

    served(10)
    forwarded_reaches(10)
    # These are workers of the gateway this test started.
    os.kill(int(first), signal.SIGTERM)  # ends on its own: it publishes its counts a last time
    assert gw.wait_for_log(f"worker {first} exited (status 0); started worker ")
    served(10)
    forwarded_reaches(20)  # the new worker took over the old one's counts: no total went down
    os.kill(int(second), signal.SIGKILL)  # a crash
    assert gw.wait_for_log(f"worker {second} exited (status -9); started worker ")
    served(10)


def test_workers_stop_when_their_parent_is_killed(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"redis": {"url": machine_redis_url()}}, workers=2)
    assert gw.wait_for_log("started 2 workers: ")
    workers = [int(pid) for pid in re.findall(r"started 2 workers: (\d+), (\d+)", gw.log)[0]]
    gw.process.kill()  # the parent only (the workers are in groups of their own): SIGKILL
    gw.process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in workers):
        assert time.monotonic() < deadline, "the workers outlived their killed parent"
        time.sleep(0.05)
    # Nothing holds the port: a new start can bind it.
    with socket.create_server(("127.0.0.1", gw.port)):
        pass


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0]
    except (OSError, IndexError):
        return "zombie"  # gone meanwhile


def test_workers_that_cannot_start_stop_the_whole_gateway(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"store:\n  url: sqlite:///{tmp_path}/absent/gateway.db\nredis:\n  url: {machine_redis_url()}\n")
    command = [sys.executable, "-m", "gateway", "serve", "--workers", "2", "--config", str(config)]
    served = subprocess.run([*command, "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert served.returncode == 1
    assert "failed to start; stopping the others" in served.stderr and "does not exist" in served.stderr


def test_redis_stopped_with_on_failure_open_keeps_serving(
    gateway_factory: GatewayFactory, own_redis: RedisServer
) -> None:
    gw = gateway_factory({"redis": {"url": own_redis.url}, "rate_limits": {"default": ["3/minute"]}})
    assert [httpx.get(f"{gw.url}/x", headers=gw.auth).status_code for _ in range(2)] == [200, 200]
    own_redis.stop()
    # Served on, counted in this process's memory: a window of its own.
    statuses = [httpx.get(f"{gw.url}/x", headers=gw.auth).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert gw.wait_for_log("Redis cannot be used")
    own_redis.start()  # empty: Redis keeps nothing on disk here
    assert gw.wait_for_log("Redis answers again", timeout=10)
    statuses = [httpx.get(f"{gw.url}/x", headers=gw.auth).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]  # shared again: a fresh window in Redis
