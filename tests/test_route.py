"""The request's route, in process: the app on a real SQLite store in front of a fake upstream,
each request handed to it as uvicorn would. (Changes made from other processes, and everything
that needs a real socket: test_auth_e2e.py, test_proxy_e2e.py and tests/adversarial.)"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.auth.keys import generate_key
from gateway.manage.service import ManagementService
from gateway.store import Subscription
from tests.conftest import AppGatewayFactory
from tests.inprocess import Answer, AppGateway, FakeUpstream, UpstreamAnswer

MOCKLY_MISSING = {
    "error": {"code": "invalid_credentials", "message": "Missing API key: send it as 'Authorization: Bearer <key>'"}
}
MOCKLY_INVALID = {"error": {"code": "invalid_credentials", "message": "Invalid or revoked API key"}}
MOCKLY_INACTIVE = {"error": {"code": "subscription_inactive", "message": "The subscription is not active"}}
PANDA_MISSING = {"error": "Authorization header is required", "code": "MISSING_API_KEY"}
PANDA_INVALID = {"error": "Invalid or revoked API key", "code": "INVALID_API_KEY"}
PANDA_INACTIVE = {"error": "Subscription is not active", "code": "SUBSCRIPTION_INACTIVE"}

PROFILES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "mockly": (MOCKLY_MISSING, MOCKLY_INVALID, MOCKLY_INACTIVE),
    "mockupanda": (PANDA_MISSING, PANDA_INVALID, PANDA_INACTIVE),
}


@pytest.fixture(params=list(PROFILES))
async def gw(app_gateway_factory: AppGatewayFactory, request: pytest.FixtureRequest) -> AppGateway:
    """The app in each error profile."""
    return await app_gateway_factory({"errors": {"profile": request.param}})


def answers(gw: AppGateway) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The missing-key, invalid-key and inactive-subscription bodies of ``gw``'s profile."""
    return PROFILES[gw.config.error_profile.name]


def refused(answer: Answer, status: int, body: dict[str, Any]) -> None:
    assert answer.status == status, answer
    assert answer.header("content-type") == "application/json"
    assert answer.header("cache-control") == "no-store"
    assert answer.json() == body
    if status == 401:
        assert answer.header("www-authenticate") == "Bearer"


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {key}".encode())]


# ------------------------------------------------------------------------- the answers


async def test_a_key_holder_is_forwarded_with_its_identity(gw: AppGateway) -> None:
    answer = await gw.request(headers=bearer(gw.key))
    assert answer.status == 200 and answer.json() == {"ok": True}
    (sent,) = gw.upstream.sent
    assert (sent.header(b"x-user-id"), sent.header(b"x-api-key-id")) == ([b"alice"], [gw.key_id.encode()])
    assert sent.header(b"authorization") == []


async def test_the_upstreams_own_rate_limit_headers_are_replaced_not_doubled(
    app_gateway_factory: AppGatewayFactory,
) -> None:
    own = [(b"X-RateLimit-Limit", b"7"), (b"x-ratelimit-remaining", b"6"), (b"X-Request-Id", b"theirs"), (b"x-a", b"1")]
    gw = await app_gateway_factory(
        {"rate_limits": {"default": ["5/minute"]}}, upstream=FakeUpstream(lambda sent: UpstreamAnswer(headers=own))
    )
    answer = await gw.request(headers=bearer(gw.key))
    # Answer.header asserts each name comes once: the gateway's values, never beside the upstream's.
    assert (answer.header("x-ratelimit-limit"), answer.header("x-ratelimit-remaining")) == ("5", "4")
    assert answer.header("x-request-id") != "theirs" and answer.header("x-a") == "1"
    quiet = await app_gateway_factory(
        {"rate_limits": {"headers": "none"}}, upstream=FakeUpstream(lambda sent: UpstreamAnswer(headers=own))
    )
    passed = await quiet.request(headers=bearer(quiet.key))
    assert passed.header("X-RateLimit-Limit") == "7"  # the gateway writes none: the upstream's pass


async def test_a_chunked_upload_gets_its_length_after_the_identity_headers(app_gateway: AppGateway) -> None:
    chunked = [app_gateway.auth, (b"x-request-id", b"chunked-1"), (b"transfer-encoding", b"chunked")]
    assert (await app_gateway.request("POST", headers=chunked, body=b"abc")).status == 200
    (sent,) = app_gateway.upstream.sent
    assert sent.body == b"abc" and sent.header(b"transfer-encoding") == []
    assert sent.headers[-4:] == [
        (b"x-user-id", b"alice"),
        (b"x-api-key-id", app_gateway.key_id.encode()),
        (b"x-request-id", b"chunked-1"),
        (b"content-length", b"3"),
    ]


async def test_missing_key(gw: AppGateway) -> None:
    refused(await gw.request(), 401, answers(gw)[0])
    assert gw.upstream.sent == []


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic YWxpY2U6c2VjcmV0", id="basic"),
        pytest.param("Bearer", id="no-token"),
        pytest.param("Bearer ", id="empty-token"),
        pytest.param("Bearer {key} {key}", id="two-tokens"),
        pytest.param("Bearer {key},{key}", id="comma-list"),
        pytest.param("Token {key}", id="other-scheme"),
        pytest.param("{key}", id="no-scheme"),
        pytest.param("Bearer {mistyped}", id="bad-checksum"),
        pytest.param("Bearer {unknown}", id="unknown-key"),
        pytest.param("Bearer {other_prefix}", id="other-prefix"),
    ],
)
async def test_invalid_credentials(gw: AppGateway, authorization: str) -> None:
    mistyped = gw.key[:-1] + ("a" if gw.key[-1] != "a" else "b")
    value = authorization.format(
        key=gw.key, mistyped=mistyped, unknown=generate_key("mk_live_"), other_prefix=generate_key("mpa_")
    )
    answer = await gw.request(headers=[(b"authorization", value.encode()), (b"x-request-id", b"refused-1")])
    refused(answer, 401, answers(gw)[1])
    assert gw.key.encode() not in answer.body
    assert answer.header("x-request-id") == "refused-1"
    assert gw.upstream.sent == []


async def test_two_authorization_headers_are_an_invalid_key(gw: AppGateway) -> None:
    refused(await gw.request(headers=bearer(gw.key) * 2), 401, answers(gw)[1])


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_the_scheme_is_case_insensitive(app_gateway: AppGateway, scheme: str) -> None:
    answer = await app_gateway.request(headers=[(b"authorization", f"{scheme} {app_gateway.key}".encode())])
    assert answer.status == 200


async def test_a_preflight_without_a_key_is_401(app_gateway: AppGateway) -> None:
    preflight = [(b"origin", b"https://app.example"), (b"access-control-request-method", b"POST")]
    answer = await app_gateway.request("OPTIONS", headers=preflight)
    refused(answer, 401, MOCKLY_MISSING)
    assert not [name for name, _ in answer.headers if name.startswith(b"access-control-")]


# ------------------------------------------------------------------------- changes made beside the gateway


async def test_revocation_fails_the_very_next_request(gw: AppGateway) -> None:
    created = await gw.service(lambda service: service.create_key(gw.user_id))
    for _ in range(3):  # the verdict is cached now (TTL 60 s)
        assert (await gw.request(headers=bearer(created.key))).status == 200
    await gw.service(lambda service: service.revoke_key(created.record.id))
    refused(await gw.request(headers=bearer(created.key)), 401, answers(gw)[1])


async def test_a_new_key_works_at_once(app_gateway: AppGateway) -> None:
    assert (await app_gateway.request(headers=bearer(app_gateway.key))).status == 200  # the cache is warm
    created = await app_gateway.service(lambda service: service.create_key(app_gateway.user_id, name="fresh"))
    assert (await app_gateway.request(headers=bearer(created.key))).status == 200


async def test_subscription_lapse_and_reactivation(gw: AppGateway) -> None:
    async def set_subscription(subscription: Subscription) -> None:
        await gw.service(lambda service: service.set_subscription(gw.user_id, subscription))

    assert (await gw.request(headers=bearer(gw.key))).status == 200
    await set_subscription("inactive")
    refused(await gw.request(headers=bearer(gw.key)), 403, answers(gw)[2])
    await set_subscription("active")
    assert (await gw.request(headers=bearer(gw.key))).status == 200


async def test_a_key_created_for_an_inactive_user_is_refused(app_gateway: AppGateway) -> None:
    async def inactive_user_key(service: ManagementService) -> str:
        await service.add_user("lapsed", subscription="inactive")
        return (await service.create_key("lapsed")).key

    key = await app_gateway.service(inactive_user_key)
    refused(await app_gateway.request(headers=bearer(key)), 403, MOCKLY_INACTIVE)


async def test_rotation_without_grace(app_gateway: AppGateway) -> None:
    gw = app_gateway
    old = await gw.service(lambda service: service.create_key(gw.user_id, name="rotating"))
    assert (await gw.request(headers=bearer(old.key))).status == 200
    new, replaced = await gw.service(lambda service: service.rotate_key(old.record.id))
    assert (new.record.user_id, new.record.name, replaced.id) == (gw.user_id, "rotating", old.record.id)
    refused(await gw.request(headers=bearer(old.key)), 401, MOCKLY_INVALID)
    assert (await gw.request(headers=bearer(new.key))).status == 200


# ------------------------------------------------------------------------- CORS


async def test_no_cors_on_the_api(app_gateway_factory: AppGatewayFactory) -> None:
    cors = [(b"access-control-allow-origin", b"*"), (b"access-control-allow-credentials", b"true")]
    gw = await app_gateway_factory(upstream=FakeUpstream(lambda sent: UpstreamAnswer(headers=cors)))
    origin = [(b"origin", b"https://evil.example"), *bearer(gw.key)]
    through = await gw.request(headers=origin)
    assert through.status == 200
    assert not [name for name, _ in through.headers if name.startswith(b"access-control-")]
    # Outside cors.deny_prefixes the upstream's answer is passed as it is.
    elsewhere = await gw.request(target="/cookies", headers=origin)
    assert elsewhere.header("access-control-allow-origin") == "*"


# ------------------------------------------------------------------------- usage


async def test_only_requests_sent_upstream_count_in_a_keys_usage(app_gateway_factory: AppGatewayFactory) -> None:
    gw = await app_gateway_factory({"limits": {"max_body_bytes": 10}})
    chunked = [(b"transfer-encoding", b"chunked"), *bearer(gw.key)]
    assert (await gw.request("POST", headers=chunked, body=b"x" * 11)).status == 413  # found too large while read
    assert (await gw.request(headers=bearer(gw.key))).status == 200
    await gw.stop()  # writes the usage
    key = await gw.service(lambda service: service.get_key(gw.key_id))
    assert key.requests == 1
