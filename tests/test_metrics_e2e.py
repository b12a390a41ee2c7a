"""Metrics end to end: outcomes counted as a client sees them, read from the admin listener."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.servers import GatewayProcess, cli_json, free_port, samples


def outcome(values: dict, name: str, code_class: str | None = None) -> float:
    """gateway_requests_total of one outcome, in one status class or all."""
    return sum(
        value
        for (metric, labels), value in values.items()
        if metric == "gateway_requests_total"
        and dict(labels)["outcome"] == name
        and code_class in (None, dict(labels)["code_class"])
    )


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory({"rate_limits": {"default": ["3/minute"]}, "limits": {"max_body_bytes": 100}}, admin=True)


def test_outcomes_are_counted(gw: GatewayProcess) -> None:
    url = gw.url + "/api/v1/templates"
    assert httpx.get(url).status_code == 401  # missing_key
    assert httpx.get(url, headers={"Authorization": "Bearer mk_live_nope"}).status_code == 401  # invalid_key
    inactive = "metrics-inactive"
    cli_json(gw, "users", "add", inactive, "--subscription", "inactive")
    inactive_key = cli_json(gw, "keys", "create", "--user", inactive)["key"]
    assert httpx.get(url, headers={"Authorization": f"Bearer {inactive_key}"}).status_code == 403
    big = httpx.post(gw.url + "/__stub/echo", headers=gw.auth, content=b"x" * 101)
    assert big.status_code == 413  # too_large (charged to the 3/minute)
    assert [httpx.get(url, headers=gw.auth).status_code for _ in range(3)] == [200, 200, 429]

    values = samples(gw)
    assert outcome(values, "missing_key") == 1 and outcome(values, "invalid_key") == 1
    assert outcome(values, "subscription_inactive") == 1 and outcome(values, "too_large") == 1
    assert outcome(values, "forwarded") == 2 and outcome(values, "rate_limited") == 1
    assert outcome(values, "upstream_unavailable") == 0 and outcome(values, "upstream_timeout") == 0
    assert values[("gateway_overhead_seconds_count", ())] == 7
    assert values[("gateway_upstream_seconds_count", ())] == 2
    assert values[("gateway_cache_misses_total", ())] >= 2
    assert values[("gateway_cache_hits_total", ())] >= 1
    assert values[("gateway_store_query_seconds_count", ())] >= 2
    # No key material, no per-key label.
    text = httpx.get(f"{gw.admin_url}/metrics", headers={"Authorization": f"Bearer {GatewayProcess.ADMIN_TOKEN}"}).text
    assert gw.key not in text and gw.key_id not in text and inactive_key not in text


def test_metrics_need_the_token_and_failures_are_counted(gw: GatewayProcess) -> None:
    before = samples(gw)[("gateway_admin_auth_failures_total", ())]
    assert httpx.get(f"{gw.admin_url}/metrics").status_code == 401
    assert httpx.get(f"{gw.admin_url}/admin/v1/keys", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert samples(gw)[("gateway_admin_auth_failures_total", ())] == before + 2


def test_public_metrics_and_upstream_outcomes(gateway_factory: GatewayFactory) -> None:
    down = gateway_factory(
        {"upstream": {"url": f"http://127.0.0.1:{free_port()}"}, "metrics": {"public": True}}, admin=True
    )
    assert httpx.get(down.url + "/api/v1/templates", headers=down.auth).status_code == 502
    values = samples(down, token=False)
    assert outcome(values, "upstream_unavailable") == 1


def test_usage_flushes_are_timed(gateway_factory: GatewayFactory) -> None:
    server = gateway_factory({"usage": {"flush_seconds": "100ms"}}, admin=True)
    assert httpx.get(server.url + "/api/v1/templates", headers=server.auth).status_code == 200
    # The first flush with something to write happens within a few intervals; wait on the store.
    deadline = time.monotonic() + 10
    while cli_json(server, "keys", "show", server.key_id)["requests"] != 1:
        assert time.monotonic() < deadline, "usage never reached the store"
    values = samples(server)
    assert values[("gateway_usage_flush_seconds_count", ())] >= 1
    assert values[("gateway_usage_flush_failures_total", ())] == 0


def test_requests_by_status_class_give_the_upstreams_error_rate(gateway_factory: GatewayFactory) -> None:
    server = gateway_factory({"metrics": {"public": True}}, admin=True)
    before = samples(server, token=False)
    # Every class a forwarded answer can have is listed from the start, at 0, and the gateway's
    # own answers under 4xx and 5xx.
    for code_class in ("2xx", "3xx", "4xx", "5xx"):
        assert before[("gateway_requests_total", (("code_class", code_class), ("outcome", "forwarded")))] == 0
    assert before[("gateway_requests_total", (("code_class", "5xx"), ("outcome", "upstream_timeout")))] == 0
    assert ("gateway_requests_total", (("code_class", "2xx"), ("outcome", "missing_key"))) not in before
    for path, status in (("/x", 200), ("/__stub/status/302", 302), ("/__stub/status/404", 404)):
        assert httpx.get(server.url + path, headers=server.auth, follow_redirects=False).status_code == status
    for _ in range(2):
        assert httpx.get(server.url + "/__stub/status/503", headers=server.auth).status_code == 503
    assert httpx.get(server.url + "/x").status_code == 401
    values = samples(server, token=False)
    assert [outcome(values, "forwarded", c) for c in ("2xx", "3xx", "4xx", "5xx")] == [1, 1, 1, 2]
    assert outcome(values, "missing_key", "4xx") == 1 and outcome(values, "missing_key") == 1
    assert outcome(values, "forwarded", "5xx") / outcome(values, "forwarded") == 0.4  # the upstream's error rate


def test_build_info(gateway_factory: GatewayFactory) -> None:
    from gateway import __version__

    server = gateway_factory({"metrics": {"public": True}}, admin=True)
    values = samples(server, token=False)
    assert values[("gateway_build_info", (("version", __version__),))] == 1
    assert [key for key in values if key[0] == "gateway_build_info"] == [
        ("gateway_build_info", (("version", __version__),))
    ]
