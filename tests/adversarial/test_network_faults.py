"""Faults on the wire between the gateway and a real upstream (the stub), made by a fault-injecting
TCP proxy: connections reset at once, reset mid-response, never answered, all dropped at once.
Each test asserts what the client got, and the last that nothing leaks after many of them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.adversarial.fault_proxy import FaultProxy
from tests.conftest import GatewayFactory
from tests.rawhttp import connect
from tests.servers import GatewayProcess, ServerProcess, samples

# Every test here runs with each upstream client: the default and aiohttp.
UPSTREAM_CLIENTS = ("builtin", "aiohttp")


@pytest.fixture(scope="module")
def faults(stub: ServerProcess) -> Iterator[FaultProxy]:
    proxy = FaultProxy(stub.port)
    yield proxy
    proxy.close()


@pytest.fixture(autouse=True)
def _healed(faults: FaultProxy) -> Iterator[None]:
    yield
    faults.heal()


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory, faults: FaultProxy) -> GatewayProcess:
    return gateway_factory({"upstream": {"url": faults.url, "read_timeout": "1s"}}, admin=True)


def test_an_upstream_that_resets_every_connection_is_a_fast_502(gw: GatewayProcess, faults: FaultProxy) -> None:
    faults.inject("reset")
    started = time.monotonic()
    answer = httpx.get(f"{gw.url}/x", headers=gw.auth)
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_unavailable"
    assert answer.headers["cache-control"] == "no-store"
    assert time.monotonic() - started < 1
    faults.heal()
    assert httpx.get(f"{gw.url}/x", headers=gw.auth).status_code == 200


def test_an_upstream_restart_between_requests_costs_no_client_an_error(gw: GatewayProcess, faults: FaultProxy) -> None:
    with httpx.Client(base_url=gw.url, headers=gw.auth) as client:
        assert [client.get("/x").status_code for _ in range(5)] == [200] * 5  # pooled upstream connections
        faults.reset_all()  # every one of them dropped, as a restarted upstream drops them
        assert [client.get("/x").status_code for _ in range(5)] == [200] * 5


def test_a_hung_upstream_is_a_504(gw: GatewayProcess, faults: FaultProxy) -> None:
    faults.inject("blackhole")
    answer = httpx.get(f"{gw.url}/x", headers=gw.auth)
    assert answer.status_code == 504 and answer.json()["error"]["code"] == "upstream_timeout"


def test_a_small_response_cut_short_is_a_502(gw: GatewayProcess, faults: FaultProxy) -> None:
    # Up to 64 KiB with a known length is read whole before the client gets anything.
    faults.inject(cut_after=20_000)
    answer = httpx.get(f"{gw.url}/__stub/bytes/50000", headers=gw.auth)
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_unavailable"


def test_a_large_response_cut_short_aborts_the_client_connection(gw: GatewayProcess, faults: FaultProxy) -> None:
    size = 8 << 20
    faults.inject(cut_after=1 << 20)
    with connect(gw.port) as sock:
        sock.sendall(f"GET /__stub/bytes/{size} HTTP/1.1\r\nHost: x\r\n".encode() + gw.auth_line + b"\r\n")
        sock.settimeout(10)
        received = b""
        while chunk := sock.recv(1 << 20):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    # The 200 had started: the only honest signal left is a connection closed before the length.
    assert head.startswith(b"HTTP/1.1 200 ") and f"content-length: {size}".encode() in head.lower()
    assert len(body) < size
    assert gw.wait_for_log("upstream broke off") and "Traceback" not in gw.log


def _metric(gw: GatewayProcess, name: str) -> float:
    return samples(gw)[(name, ())]


def test_nothing_leaks_after_thousands_of_faults(gw: GatewayProcess, faults: FaultProxy) -> None:
    with httpx.Client(base_url=gw.url, headers=gw.auth) as client:
        assert client.get("/x").status_code == 200
    fds, tasks = _metric(gw, "process_open_fds"), _metric(gw, "gateway_event_loop_tasks")

    rounds = 1000  # of each fault: 3,000 in all
    with httpx.Client(base_url=gw.url, headers=gw.auth) as client:
        faults.inject("reset")
        assert {client.get("/x").status_code for _ in range(rounds)} == {502}
        faults.heal()
        faults.inject(cut_after=20_000)
        assert {client.get("/__stub/bytes/50000").status_code for _ in range(rounds)} == {502}
        faults.heal()
    # Clients that leave mid-download: each takes its upstream request with it.
    for _ in range(rounds):
        with connect(gw.port) as sock:
            sock.sendall(b"GET /__stub/bytes/4000000 HTTP/1.1\r\nHost: x\r\n" + gw.auth_line + b"\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")

    deadline = time.monotonic() + 10
    while _metric(gw, "gateway_event_loop_tasks") > tasks or _metric(gw, "process_open_fds") > fds + 10:
        assert time.monotonic() < deadline, (
            f"tasks {_metric(gw, 'gateway_event_loop_tasks')} (was {tasks}), "
            f"fds {_metric(gw, 'process_open_fds')} (was {fds})"
        )
        time.sleep(0.1)
    with httpx.Client(base_url=gw.url, headers=gw.auth) as client:
        assert client.get("/x").status_code == 200
