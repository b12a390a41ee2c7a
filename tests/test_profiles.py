from __future__ import annotations

import json

import pytest

from gateway.errors import (
    GatewayError,
    InsufficientCredits,
    PayloadTooLarge,
    RateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.profiles import BUILTIN_PROFILES, SITUATIONS, ProfileError, build_profile


def rendered(profile_name: str, error: GatewayError) -> tuple[int, object]:
    status, body = BUILTIN_PROFILES[profile_name].render(error)
    return status, json.loads(body)


def test_mockly_shapes() -> None:
    assert rendered("mockly", UpstreamUnavailable()) == (
        502,
        {"error": {"code": "upstream_unavailable", "message": "The service is unavailable"}},
    )
    assert rendered("mockly", UpstreamTimeout()) == (
        504,
        {"error": {"code": "upstream_timeout", "message": "The service did not answer in time"}},
    )
    assert rendered("mockly", PayloadTooLarge(1024)) == (
        413,
        {"error": {"code": "validation_failed", "message": "Request body is larger than 1024 bytes"}},
    )


def test_mockupanda_shapes_with_and_without_details() -> None:
    assert rendered("mockupanda", UpstreamUnavailable()) == (
        502,
        {"error": "Upstream service unavailable", "code": "UPSTREAM_UNAVAILABLE"},
    )
    limited = RateLimited(limit=100, window="60s", retry_after=23, scope="user")
    assert rendered("mockupanda", limited) == (
        429,
        {
            "error": "Rate limit exceeded",
            "code": "RATE_LIMIT_EXCEEDED",
            "details": {"limit": 100, "window": "60s", "retry_after": 23, "scope": "user"},
        },
    )
    assert rendered("mockly", limited)[1] == {
        "error": {"code": "rate_limited", "message": "Rate limit of 100 requests per 60s exceeded; retry in 23s"}
    }


def test_insufficient_credits_in_both_profiles() -> None:
    refused = InsufficientCredits(required=3, balance=1)
    assert rendered("mockupanda", refused) == (
        402,
        {"error": "Insufficient credits", "code": "INSUFFICIENT_CREDITS", "details": {"required": 3, "balance": 1}},
    )
    assert rendered("mockly", refused) == (
        402,
        {
            "error": {
                "code": "insufficient_credits",
                "message": "Not enough credits: this request costs 3, the balance is 1",
            }
        },
    )


@pytest.mark.parametrize("profile", sorted(BUILTIN_PROFILES))
def test_every_builtin_profile_covers_every_situation(profile: str) -> None:
    assert set(BUILTIN_PROFILES[profile].situations) == set(SITUATIONS)


def test_custom_profile_overrides_a_base() -> None:
    profile = build_profile(
        "acme",
        {
            "base": "mockupanda",
            "envelope": {"errors": [{"status": "{status}", "code": "{code}", "detail": "{message}"}], "ok": False},
            "situations": {"upstream_timeout": {"status": 503, "code": "SLOW", "message": "Try later"}},
        },
    )
    status, body = profile.render(UpstreamTimeout())
    assert (status, json.loads(body)) == (
        503,
        {"errors": [{"status": 503, "code": "SLOW", "detail": "Try later"}], "ok": False},
    )
    status, body = profile.render(UpstreamUnavailable())
    assert status == 502
    assert json.loads(body)["errors"][0]["code"] == "UPSTREAM_UNAVAILABLE"


@pytest.mark.parametrize(
    ("definition", "key"),
    [
        pytest.param({"base": "nope"}, "base", id="unknown-base"),
        pytest.param({"envelope": {"error": "static"}}, "envelope", id="envelope-without-placeholder"),
        pytest.param({"situations": {"teapot": {"status": 418}}}, "situations.teapot", id="unknown-situation"),
        pytest.param(
            {"situations": {"upstream_timeout": {"status": 200}}},
            "situations.upstream_timeout.status",
            id="status-not-error",
        ),
        pytest.param(
            {"situations": {"upstream_timeout": {"code": ""}}}, "situations.upstream_timeout.code", id="empty-code"
        ),
        pytest.param(
            {"situations": {"upstream_timeout": {"message": "{limit}"}}},
            "situations.upstream_timeout.message",
            id="foreign-placeholder",
        ),
        pytest.param(
            {"situations": {"upstream_timeout": {"message": "{"}}},
            "situations.upstream_timeout.message",
            id="broken-format",
        ),
        pytest.param(
            {"situations": {"rate_limited": {"details": ["limit", "user"]}}},
            "situations.rate_limited.details",
            id="unknown-detail",
        ),
        pytest.param(
            {"situations": {"rate_limited": {"colour": "red"}}}, "situations.rate_limited.colour", id="unknown-key"
        ),
        pytest.param({"shape": 1}, "shape", id="unknown-top-key"),
    ],
)
def test_invalid_custom_profile_names_the_key(definition: dict, key: str) -> None:
    with pytest.raises(ProfileError) as caught:
        build_profile("acme", definition)
    assert caught.value.key == key
