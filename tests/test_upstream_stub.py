"""upstream_stub: the API it imitates (profile, render delay, mockups per user) and its test tools.

In process through ``httpx.ASGITransport`` for the answers, as real processes on loopback for the
flags, and behind a real gateway for what its identity headers change."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import click
import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.servers import _user_with_key, start_stub
from upstream_stub.__main__ import Duration
from upstream_stub.app import StubApp, create_app

GENERATE = "/api/v1/mockups/generate"
# Mockupanda's documentation's own example (its Templates and Generate Mockup pages).
PANDA_EXAMPLE = {"template_id": "bedroom-poster-01", "artwork_url": "https://example.com/art.jpg"}
ART = "https://example.com/a.png"


def client_for(app: StubApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://stub")


@pytest.fixture(params=["mockly", "mockupanda"])
async def any_stub(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(profile=request.param)) as client:
        yield client


async def test_the_mockupanda_documentations_example_is_accepted(any_stub: httpx.AsyncClient) -> None:
    templates = (await any_stub.get("/api/v1/templates")).json()["data"]
    assert {"bedroom-poster-01", "wall-diptych-01", "tpl_mug"} <= {t["id"] for t in templates}
    response = await any_stub.post(GENERATE, json=PANDA_EXAMPLE)
    assert response.status_code == 201
    mockup = response.json()["data"]
    assert (mockup["template_id"], mockup["artwork_url"], mockup["status"]) == (
        "bedroom-poster-01",
        "https://example.com/art.jpg",
        "completed",
    )
    assert (await any_stub.get("/api/v1/templates/bedroom-poster-01")).json()["data"]["name"] == "Bedroom Poster"


def mockly(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": code, "message": message}}


def panda(status: int, code: str, message: str, **details: Any) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"error": message, "code": code}
    if details:
        body["details"] = details
    return status, body


# method, path, JSON body (or raw bytes), the mockly answer, the mockupanda answer
ERRORS = [
    pytest.param(
        "GET",
        "/api/v1/nothing",
        None,
        mockly(404, "not_found", "No such endpoint"),
        panda(404, "NOT_FOUND", "No such endpoint"),
        id="unknown-endpoint",
    ),
    pytest.param(
        "DELETE",
        "/api/v1/templates",
        None,
        mockly(405, "method_not_allowed", "Method not allowed"),
        panda(405, "METHOD_NOT_ALLOWED", "Method not allowed"),
        id="wrong-method",
    ),
    pytest.param(
        "GET",
        "/api/v1/templates/nope",
        None,
        mockly(404, "not_found", "Template not found"),
        panda(404, "TEMPLATE_NOT_FOUND", "Template not found"),
        id="unknown-template",
    ),
    pytest.param(
        "GET",
        "/api/v1/mockups/mk_unknown",
        None,
        mockly(404, "not_found", "Mockup not found"),
        panda(404, "MOCKUP_NOT_FOUND", "Mockup not found"),
        id="unknown-mockup",
    ),
    pytest.param(
        "POST",
        GENERATE,
        b"{not json",
        mockly(400, "validation_failed", "Request body is not valid JSON"),
        panda(400, "BAD_REQUEST", "Request body is not valid JSON"),
        id="not-json",
    ),
    pytest.param(
        "POST",
        GENERATE,
        {"artwork_url": ART},
        mockly(400, "validation_failed", "template_id is required"),
        panda(400, "MISSING_TEMPLATE_ID", "template_id is required"),
        id="no-template-id",
    ),
    pytest.param(
        "POST",
        GENERATE,
        {"template_id": "bedroom-poster-01"},
        mockly(400, "validation_failed", "artwork_url is required"),
        panda(400, "MISSING_ARTWORK", "artwork_url is required"),
        id="no-artwork",
    ),
    pytest.param(
        "POST",
        GENERATE,
        {"template_id": "nope", "artwork_url": ART},
        mockly(400, "validation_failed", "Unknown template_id: nope"),
        panda(404, "TEMPLATE_NOT_FOUND", "Unknown template_id: nope", template_id="nope"),
        id="generate-unknown-template",
    ),
    pytest.param(
        "POST",
        GENERATE,
        {"template_id": "bedroom-poster-01", "artwork_url": "ftp://example.com/a.png"},
        mockly(400, "validation_failed", "artwork_url must be an absolute http(s) URL"),
        panda(400, "INVALID_ARTWORK_URL", "artwork_url must be an absolute http(s) URL"),
        id="bad-artwork-url",
    ),
]


@pytest.mark.parametrize("method, path, body, mockly_answer, panda_answer", ERRORS)
@pytest.mark.parametrize("profile", ["mockly", "mockupanda"])
async def test_errors_take_the_shape_of_the_profile_imitated(
    profile: str,
    method: str,
    path: str,
    body: Any,
    mockly_answer: tuple[int, dict[str, Any]],
    panda_answer: tuple[int, dict[str, Any]],
) -> None:
    content = body if isinstance(body, bytes) else None
    json_body = None if isinstance(body, bytes) else body
    async with client_for(create_app(profile=profile)) as client:  # type: ignore[arg-type]
        response = await client.request(method, path, content=content, json=json_body)
    assert (response.status_code, response.json()) == (mockly_answer if profile == "mockly" else panda_answer)
    assert response.headers["content-type"] == "application/json"


async def test_a_user_sees_only_its_own_mockups(any_stub: httpx.AsyncClient) -> None:
    alice, bob = {"X-User-Id": "alice"}, {"X-User-Id": "bob"}
    first = (await any_stub.post(GENERATE, json=PANDA_EXAMPLE, headers=alice)).json()["data"]
    second = (await any_stub.post(GENERATE, json={**PANDA_EXAMPLE, "template_id": "tpl_mug"}, headers=alice)).json()
    unknown = await any_stub.get("/api/v1/mockups/mk_000000000000000000000000", headers=bob)

    # Alice lists and gets hers, newest first.
    listed = (await any_stub.get("/api/v1/mockups", headers=alice)).json()["data"]
    assert [m["id"] for m in listed] == [second["data"]["id"], first["id"]]
    assert (await any_stub.get(f"/api/v1/mockups/{first['id']}", headers=alice)).json()["data"] == first
    # Bob, and a caller without X-User-Id, see none: her mockup answers as an unknown one does.
    for other in (bob, {}):
        assert (await any_stub.get("/api/v1/mockups", headers=other)).json() == {"data": []}
        theirs = await any_stub.get(f"/api/v1/mockups/{first['id']}", headers=other)
        assert (theirs.status_code, theirs.json()) == (unknown.status_code, unknown.json())
    assert unknown.status_code == 404


async def test_the_oldest_mockup_of_any_user_goes_first_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("upstream_stub.app.MOCKUP_LIMIT", 2)
    app = create_app()
    async with client_for(app) as client:
        ids = []
        for user in ("alice", "bob", "alice"):
            created = await client.post(GENERATE, json=PANDA_EXAMPLE, headers={"X-User-Id": user})
            ids.append(created.json()["data"]["id"])
        assert (await client.get(f"/api/v1/mockups/{ids[0]}", headers={"X-User-Id": "alice"})).status_code == 404
        assert [
            m["id"] for m in (await client.get("/api/v1/mockups", headers={"X-User-Id": "alice"})).json()["data"]
        ] == [ids[2]]
        assert (await client.get(f"/api/v1/mockups/{ids[1]}", headers={"X-User-Id": "bob"})).status_code == 200
    assert sum(len(owned) for owned in app.mockups.values()) == 2


async def test_generating_takes_the_render_delay_and_nothing_else_does() -> None:
    async with client_for(create_app(render_delay=0.3)) as client:
        started = time.monotonic()
        assert (await client.get("/api/v1/templates")).status_code == 200
        assert time.monotonic() - started < 0.25
        started = time.monotonic()
        assert (await client.post(GENERATE, json=PANDA_EXAMPLE)).status_code == 201
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        # A refused request is refused at once.
        assert (await client.post(GENERATE, json={"template_id": "nope", "artwork_url": ART})).status_code == 400
        assert time.monotonic() - started < 0.25


@pytest.mark.parametrize(
    "text, seconds",
    [
        pytest.param("2s", 2.0, id="seconds"),
        pytest.param("500ms", 0.5, id="milliseconds"),
        pytest.param("1m", 60.0, id="minutes"),
        pytest.param("1.5", 1.5, id="bare-number"),
        pytest.param("0", 0.0, id="zero"),
    ],
)
def test_the_render_delay_reads_like_the_gateways_durations(text: str, seconds: float) -> None:
    assert Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["soon", "-1s", "2 h", "", "1e400"])
def test_a_render_delay_that_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(click.BadParameter, match="duration"):
        Duration().convert(text, None, None)


def test_create_app_refuses_what_it_cannot_imitate() -> None:
    with pytest.raises(ValueError, match="profile: expected one of mockly, mockupanda"):
        create_app(profile="acme")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="render_delay"):
        create_app(render_delay=-1)


@pytest.mark.parametrize("path", ["/__stub/echo", "/__stub/bytes/10", "/__stub/received", "/anything/else"])
async def test_the_test_tools_are_off_unless_asked_for(path: str) -> None:
    async with client_for(create_app(profile="mockupanda")) as client:
        response = await client.get(path)
    assert (response.status_code, response.json()) == panda(404, "NOT_FOUND", "No such endpoint")
    async with client_for(create_app(test_tools=True)) as client:
        assert (await client.get(path)).status_code == 200


def test_the_flags_reach_the_served_stub() -> None:
    """A real process: --profile, --render-delay and --test-tools (and their absence) as typed."""
    stub = start_stub("--profile", "mockupanda", "--render-delay", "300ms", test_tools=False)
    try:
        assert httpx.get(f"{stub.url}/__stub/echo").json() == {"error": "No such endpoint", "code": "NOT_FOUND"}
        started = time.monotonic()
        created = httpx.post(f"{stub.url}{GENERATE}", json=PANDA_EXAMPLE, headers={"X-User-Id": "u1"})
        assert created.status_code == 201 and time.monotonic() - started >= 0.3
        missing = httpx.get(f"{stub.url}/api/v1/mockups/{created.json()['data']['id']}", headers={"X-User-Id": "u2"})
        assert (missing.status_code, missing.json()["code"]) == (404, "MOCKUP_NOT_FOUND")
    finally:
        stub.stop()
    stub = start_stub()
    try:
        assert httpx.get(f"{stub.url}/__stub/echo").json()["method"] == "GET"
        assert httpx.get(f"{stub.url}/api/v1/nothing").json() == {
            "error": {"code": "not_found", "message": "No such endpoint"}
        }
    finally:
        stub.stop()


def test_behind_the_gateway_each_key_sees_its_own_users_mockups(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory()
    bob = gateway.run_service(lambda service: _user_with_key(service, "bob"))
    as_alice, as_bob = gateway.auth, {"Authorization": f"Bearer {bob.key}"}
    created = httpx.post(f"{gateway.url}{GENERATE}", json=PANDA_EXAMPLE, headers=as_alice)
    assert created.status_code == 201
    url = f"{gateway.url}/api/v1/mockups/{created.json()['data']['id']}"
    assert httpx.get(url, headers=as_alice).status_code == 200
    assert httpx.get(url, headers=as_bob).status_code == 404
    # A client cannot pass for Alice: the gateway replaces any X-User-Id it sends.
    assert httpx.get(url, headers={**as_bob, "X-User-Id": "alice"}).status_code == 404
    assert httpx.get(f"{gateway.url}/api/v1/mockups", headers=as_bob).json() == {"data": []}
