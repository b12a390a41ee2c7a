"""Rate limits and usage end to end: real gateways, real stores, concurrent clients, a real SIGTERM."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import httpx
import pytest
from click.testing import CliRunner

from gateway.cli import main
from tests.conftest import GatewayFactory
from tests.servers import GatewayProcess, ServerProcess, cli_json as cli, samples


def new_key(gateway: GatewayProcess, *extra: str) -> str:
    return cli(gateway, "keys", "create", "--user", gateway.user_id, *extra)["key"]


def get(gateway: GatewayProcess, key: str, path: str = "/api/v1/templates", **kwargs) -> httpx.Response:
    return httpx.get(gateway.url + path, headers={"Authorization": f"Bearer {key}"}, **kwargs)


@pytest.fixture(scope="module")
def limited(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory({"rate_limits": {"default": ["5/minute", "8/day"]}})


@pytest.fixture(scope="module")
def panda(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory({"rate_limits": {"default": ["5/minute", "8/day"]}, "errors": {"profile": "mockupanda"}})


def test_exact_count_under_concurrency(gateway_factory: GatewayFactory) -> None:
    n = 20
    server = gateway_factory({"rate_limits": {"default": [f"{n}/minute"]}})

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=3 * n)
        async with httpx.AsyncClient(base_url=server.url, headers=server.auth, limits=limits, timeout=30) as client:
            return await asyncio.gather(*(client.get("/api/v1/templates") for _ in range(3 * n)))

    statuses = sorted(r.status_code for r in asyncio.run(burst()))
    assert statuses == [200] * n + [429] * (2 * n)


def test_minute_window_headers_and_429(limited: GatewayProcess, stub: ServerProcess) -> None:
    key = new_key(limited)
    started = time.time()
    remaining = []
    for _ in range(5):
        response = get(limited, key)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "5"
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
        reset = int(response.headers["x-ratelimit-reset"])
        assert math.ceil(started + 60) <= reset <= math.ceil(time.time() + 60)
    assert remaining == [4, 3, 2, 1, 0]
    request_id = uuid.uuid4().hex
    denied = get(limited, key, "/__stub/echo", params={"id": request_id})
    assert denied.status_code == 429
    assert denied.headers["content-type"] == "application/json"
    retry_after = int(denied.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert denied.headers["x-ratelimit-remaining"] == "0" and denied.headers["x-ratelimit-limit"] == "5"
    assert denied.json() == {
        "error": {
            "code": "rate_limited",
            "message": f"Rate limit of 5 requests per 60s exceeded; retry in {retry_after}s",
        }
    }
    received = httpx.get(stub.url + "/__stub/received").json()["requests"]
    assert not [r for r in received if request_id in r["raw_path"]]


def test_day_window_and_mockupanda_body(gateway_factory: GatewayFactory) -> None:
    server = gateway_factory({"rate_limits": {"default": ["20/minute", "8/day"]}, "errors": {"profile": "mockupanda"}})
    statuses = [get(server, server.key).status_code for _ in range(9)]
    assert statuses == [200] * 8 + [429]
    denied = get(server, server.key)
    body = denied.json()
    assert body["error"] == "Rate limit exceeded" and body["code"] == "RATE_LIMIT_EXCEEDED"
    assert body["details"]["limit"] == 8 and body["details"]["window"] == "86400s"
    assert body["details"]["retry_after"] == int(denied.headers["retry-after"])
    assert 86000 < body["details"]["retry_after"] <= 86400
    assert denied.headers["x-ratelimit-limit"] == "8"


def test_mockupanda_minute_429(panda: GatewayProcess) -> None:
    key = new_key(panda)
    for _ in range(5):
        assert get(panda, key).status_code == 200
    denied = get(panda, key)
    retry_after = int(denied.headers["retry-after"])
    assert denied.json() == {
        "error": "Rate limit exceeded",
        "code": "RATE_LIMIT_EXCEEDED",
        "details": {"limit": 5, "window": "60s", "retry_after": retry_after, "scope": "key"},
    }


def test_a_users_keys_share_its_limits(gateway_factory: GatewayFactory) -> None:
    server = gateway_factory({"rate_limits": {"default": ["5/minute"]}, "errors": {"profile": "mockupanda"}})
    other = new_key(server)
    assert get(server, server.key).status_code == 200  # no user limits yet: only the key's count
    user = cli(server, "users", "set-limits", server.user_id, "3/minute;50/day")
    assert user["rate_limits"] == ["3/minute", "50/day"]
    # The change counts at once; the request before it is not in the user's new window.
    statuses = [get(server, key).status_code for key in (server.key, other, server.key, other)]
    assert statuses == [200, 200, 200, 429]
    denied = get(server, server.key)
    assert denied.json()["details"] == {
        "limit": 3,
        "window": "60s",
        "retry_after": int(denied.headers["retry-after"]),
        "scope": "user",
    }
    assert (denied.headers["x-ratelimit-limit"], denied.headers["x-ratelimit-remaining"]) == ("3", "0")
    # A key of another user is not counted with them.
    cli(server, "users", "add", "bob")
    bob = cli(server, "keys", "create", "--user", "bob")["key"]
    assert get(server, bob).status_code == 200
    # Back to rate_limits.per_user (none here): the keys' own windows alone again.
    assert cli(server, "users", "set-limits", server.user_id, "--default")["rate_limits"] is None
    assert get(server, other).status_code == 200


def test_per_user_limits_from_the_config_and_the_closest_window_in_the_headers(
    gateway_factory: GatewayFactory,
) -> None:
    server = gateway_factory({"rate_limits": {"default": ["100/minute"], "per_user": ["4/minute"]}})
    second = new_key(server)
    answer = get(server, server.key)
    # The user's window is the closest to refusing: it is the one described.
    assert (answer.headers["x-ratelimit-limit"], answer.headers["x-ratelimit-remaining"]) == ("4", "3")
    assert [get(server, key).status_code for key in (second, server.key, second, server.key)] == [200, 200, 200, 429]


def test_per_key_limits_and_their_change(limited: GatewayProcess) -> None:
    created = cli(limited, "keys", "create", "--user", limited.user_id, "--rate-limit", "3/minute;100/day")
    assert created["rate_limits"] == ["3/minute", "100/day"]
    key, key_id = created["key"], created["id"]
    assert [get(limited, key).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert cli(limited, "keys", "set-limits", key_id, "6/minute")["rate_limits"] == ["6/minute"]
    response = get(limited, key)
    assert response.status_code == 200 and response.headers["x-ratelimit-limit"] == "6"
    assert cli(limited, "keys", "set-limits", key_id, "--default")["rate_limits"] is None
    assert get(limited, key).headers["x-ratelimit-limit"] == "5"


@pytest.mark.parametrize(
    ("mode", "present", "absent"),
    [
        ("ietf", {"ratelimit-policy", "ratelimit"}, {"x-ratelimit-limit"}),
        ("both", {"ratelimit-policy", "ratelimit", "x-ratelimit-limit"}, set()),
        ("none", set(), {"ratelimit-policy", "ratelimit", "x-ratelimit-limit", "x-ratelimit-remaining"}),
    ],
)
def test_header_modes(gateway_factory: GatewayFactory, mode: str, present: set[str], absent: set[str]) -> None:
    server = gateway_factory({"rate_limits": {"default": ["5/minute", "8/day"], "headers": mode}})
    response = get(server, server.key)
    assert present <= set(response.headers) and not absent & set(response.headers)
    if "ratelimit-policy" in present:
        assert response.headers["ratelimit-policy"] == '"minute";q=5;w=60, "day";q=8;w=86400'
        minute, day = response.headers["ratelimit"].split(", ")
        assert minute.startswith('"minute";r=4;t=') and day.startswith('"day";r=7;t=')
        assert 59 <= int(minute.rpartition("=")[2]) <= 60


def test_workers_above_one_are_refused_without_shared_storage() -> None:
    result = CliRunner().invoke(main, ["serve", "--workers", "2", "--config", "/dev/null"])
    assert result.exit_code == 2
    assert "2 workers would allow 2 times every limit" in result.stderr
    assert "redis.url" in result.stderr


def test_usage_and_credits_survive_a_sigterm(gateway_factory: GatewayFactory) -> None:
    # Nothing is written on a timer here: every count below comes from the shutdown flush.
    server = gateway_factory({"rate_limits": {"default": ["6/minute"]}, "usage": {"flush_seconds": "1h"}})
    generate = {"template_id": "tpl_mug", "artwork_url": "https://a.example/art.png"}
    with httpx.Client(base_url=server.url, headers=server.auth) as client:
        assert client.get("/api/v1/templates").status_code == 200
        assert client.post("/api/v1/mockups/generate", json=generate).status_code == 201  # 1 credit
        assert client.post("/api/v1/mockups/generate", json=generate).status_code == 201  # 1 credit
        assert client.post("/api/v1/mockups/generate", json={"template_id": "x"}).status_code == 400  # none
        assert client.get("/__stub/status/500").status_code == 500
        assert client.get("/api/v1/templates/tpl_mug").status_code == 200
        assert [client.get("/api/v1/templates").status_code for _ in range(3)] == [429] * 3
    server.stop()
    # The lifespan's shutdown ran to its end (uvicorn says so only when it fails).
    assert f"stopped process {server.pid}" in server.log and "shutdown failed" not in server.log
    shown = cli(server, "keys", "show", server.key_id)
    assert (shown["requests"], shown["rate_limited"], shown["credits"]) == (6, 3, 2)
    assert shown["last_used_at"] is not None
    listed = {k["id"]: k for k in cli(server, "keys", "list")}
    assert listed[server.key_id]["requests"] == 6
    assert cli(server, "usage", "--user", server.user_id) == [
        {
            "user_id": server.user_id,
            "requests": 6,
            "rate_limited": 3,
            "credits": 2,
            "last_used_at": shown["last_used_at"],
            "legacy_keys": 0,
            "legacy_last_used_at": None,
        }
    ]


GENERATE = "/api/v1/mockups/generate"
ORDER = {"template_id": "tpl_mug", "artwork_url": "https://example.com/a.png"}


def generate(gateway: GatewayProcess, key: str) -> httpx.Response:
    return httpx.post(gateway.url + GENERATE, headers={"Authorization": f"Bearer {key}"}, json=ORDER)


def test_a_route_limit_leaves_other_routes_alone(gateway_factory: GatewayFactory) -> None:
    route = {"method": "POST", "path": GENERATE, "per_key": ["2/minute"], "per_user": ["3/minute"]}
    server = gateway_factory(
        {"rate_limits": {"default": ["100/minute"], "routes": [route]}, "errors": {"profile": "mockupanda"}}
    )
    other = new_key(server)
    assert [generate(server, server.key).status_code for _ in range(3)] == [201, 201, 429]
    denied = generate(server, server.key)
    assert denied.json()["details"]["scope"] == f"key:POST {GENERATE}" and denied.json()["details"]["limit"] == 2
    assert denied.headers["x-ratelimit-limit"] == "2"
    # The user's route window (3) lets the other key through once, then refuses it too.
    assert [generate(server, other).status_code for _ in range(2)] == [201, 429]
    assert generate(server, other).json()["details"]["scope"] == f"user:POST {GENERATE}"
    # Other routes, and the same path with another method, count only against the general limits.
    assert [get(server, server.key).status_code for _ in range(5)] == [200] * 5
    assert get(server, server.key, GENERATE).status_code == 404  # the stub's own answer to GET: not 429
    # A dot segment does not dodge the route (matched as credits.rules are).
    dodge = httpx.post(
        server.url + "/api/v1/mockups/./generate", headers={"Authorization": f"Bearer {server.key}"}, json=ORDER
    )
    assert dodge.status_code == 429


def test_observe_mode_forwards_everything_and_counts_what_it_would_refuse(gateway_factory: GatewayFactory) -> None:
    route = {"method": "POST", "path": GENERATE, "per_key": ["2/minute"], "mode": "observe"}
    server = gateway_factory(
        {"rate_limits": {"default": ["100/minute"], "per_user": ["3/minute"], "observe": ["user"], "routes": [route]}},
        admin=True,
    )
    answers = [generate(server, server.key) for _ in range(5)]
    assert [a.status_code for a in answers] == [201] * 5  # nothing refused
    # Observed limits are never shown to the client: the headers describe the key's 100/minute.
    assert answers[-1].headers["x-ratelimit-limit"] == "100" and answers[-1].headers["x-ratelimit-remaining"] == "95"
    observed = [server.access_entry(a.headers["x-request-id"])["observed"] for a in answers]
    assert observed[:2] == [None, None]
    assert observed[2] == f"key:POST {GENERATE} 2/60s"  # the route's 2/minute would have refused the 3rd
    assert all(o is not None for o in observed[2:])
    assert samples(server)[("gateway_rate_limit_observed_total", ())] == 3


def test_usage_per_day_from_the_cli_and_the_admin_api(gateway_factory: GatewayFactory) -> None:
    server = gateway_factory(
        {"rate_limits": {"default": ["4/minute"]}, "usage": {"flush_seconds": "100ms"}}, admin=True
    )
    other = new_key(server)
    statuses = [get(server, key).status_code for key in [server.key] * 5 + [other] * 2]
    assert statuses == [200] * 4 + [429] + [200] * 2
    order = {"template_id": "tpl_mug", "artwork_url": "https://example.com/a.png"}
    generate = httpx.post(
        f"{server.url}/api/v1/mockups/generate", headers={"Authorization": f"Bearer {other}"}, json=order
    )
    assert generate.status_code == 201  # 1 credit
    deadline = time.monotonic() + 10
    while cli(server, "usage", "--user", server.user_id, "--daily")["totals"]["requests"] != 7:
        assert time.monotonic() < deadline, "usage never reached the store"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    mine = cli(server, "usage", "--key", server.key_id, "--daily", "--from", today, "--to", today)
    assert mine["key_id"] == server.key_id and (mine["from"], mine["to"]) == (today, today)
    assert mine["days"] == [{"day": today, "requests": 4, "rate_limited": 1, "credits": 0, "refused_credits": 0}]
    shown = cli(server, "keys", "show", server.key_id)
    assert (shown["requests"], shown["rate_limited"]) == (4, 1)  # the days add up to the totals
    admin = {"Authorization": f"Bearer {server.ADMIN_TOKEN}"}
    by_user = httpx.get(f"{server.admin_url}/admin/v1/users/{server.user_id}/usage", headers=admin).json()
    assert by_user["granularity"] == "day" and by_user["to"] == today
    assert by_user["totals"] == {"requests": 7, "rate_limited": 1, "credits": 1, "refused_credits": 0}
    bad = httpx.get(f"{server.admin_url}/admin/v1/keys/{server.key_id}/usage?from=yesterday", headers=admin)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "from"
    unknown = httpx.get(f"{server.admin_url}/admin/v1/keys/key_nope/usage", headers=admin)
    assert unknown.status_code == 404


def test_usage_is_written_while_running(gateway_factory: GatewayFactory) -> None:
    server = gateway_factory({"usage": {"flush_seconds": "100ms"}})
    assert get(server, server.key).status_code == 200
    deadline = time.monotonic() + 10
    while cli(server, "keys", "show", server.key_id)["requests"] != 1:
        assert time.monotonic() < deadline, "usage never reached the store"
    assert server.process.poll() is None
