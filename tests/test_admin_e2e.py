"""The admin listener end to end: a real gateway with an admin token, its public listener beside it."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.servers import GatewayProcess, free_port, gateway_cli

API = "/admin/v1"


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory({}, admin=True)


@pytest.fixture
def admin(gw: GatewayProcess):
    assert gw.admin_url is not None
    auth = {"Authorization": f"Bearer {GatewayProcess.ADMIN_TOKEN}"}
    with httpx.Client(base_url=gw.admin_url, headers=auth, timeout=10) as client:
        yield client


def assert_error(response: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code and body["message"]
    assert body.get("field") == field


def test_health_needs_no_token(gw: GatewayProcess) -> None:
    assert httpx.get(f"{gw.admin_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gw.admin_url}/readyz").json() == {"status": "ready"}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="none"),
        pytest.param({"Authorization": "Bearer wrong-token-0123456789abcdef"}, id="wrong"),
        pytest.param({"Authorization": f"Basic {GatewayProcess.ADMIN_TOKEN}"}, id="other-scheme"),
        pytest.param({"Authorization": f"Bearer {GatewayProcess.ADMIN_TOKEN}x"}, id="longer"),
    ],
)
def test_admin_paths_need_the_token(gw: GatewayProcess, headers: dict[str, str]) -> None:
    for method, path in (("GET", f"{API}/keys"), ("POST", f"{API}/users"), ("GET", f"{API}/usage")):
        response = httpx.request(method, f"{gw.admin_url}{path}", headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


def test_users(admin: httpx.Client) -> None:
    created = admin.post(f"{API}/users", json={"id": "dash-user", "subscription": "inactive"})
    assert created.status_code == 201
    assert created.json()["subscription"] == "inactive"
    assert_error(admin.post(f"{API}/users", json={"id": "dash-user"}), 409, "conflict")
    assert admin.get(f"{API}/users/dash-user").json()["id"] == "dash-user"
    assert_error(admin.get(f"{API}/users/nobody"), 404, "not_found")
    changed = admin.put(f"{API}/users/dash-user/subscription", json={"status": "active"})
    assert changed.json()["subscription"] == "active"
    assert_error(
        admin.put(f"{API}/users/dash-user/subscription", json={"status": "paused"}), 422, "validation_failed", "status"
    )
    assert_error(admin.put(f"{API}/users/nobody/subscription", json={"status": "active"}), 404, "not_found")
    assert_error(admin.post(f"{API}/users", content=b"{not json"), 400, "invalid_json")
    assert_error(admin.post(f"{API}/users", json={"id": 7}), 422, "validation_failed", "id")
    assert_error(admin.post(f"{API}/users", json={"id": "x", "colour": "red"}), 422, "validation_failed", "colour")
    # The field as the request names it (issue 15: "field = the offending field name"); it was user_id.
    assert_error(admin.post(f"{API}/users", json={"id": "has space"}), 422, "validation_failed", "id")


def test_a_users_own_limits(gw: GatewayProcess, admin: httpx.Client) -> None:
    admin.post(f"{API}/users", json={"id": "ul-user"})
    key = admin.post(f"{API}/keys", json={"user_id": "ul-user"}).json()
    changed = admin.put(f"{API}/users/ul-user/rate-limits", json={"rate_limits": ["2/minute"]})
    assert changed.status_code == 200 and changed.json()["rate_limits"] == ["2/minute"]
    assert admin.get(f"{API}/users/ul-user").json()["rate_limits"] == ["2/minute"]
    public = {"Authorization": f"Bearer {key['key']}"}
    assert [httpx.get(gw.url + "/x", headers=public).status_code for _ in range(3)] == [200, 200, 429]
    assert admin.put(f"{API}/users/ul-user/rate-limits", json={"rate_limits": None}).json()["rate_limits"] is None
    assert httpx.get(gw.url + "/x", headers=public).status_code == 200
    bad = admin.put(f"{API}/users/ul-user/rate-limits", json={"rate_limits": ["lots"]})
    assert_error(bad, 422, "validation_failed", "rate_limits")
    assert_error(admin.put(f"{API}/users/nobody/rate-limits", json={"rate_limits": None}), 404, "not_found")


def test_a_users_credits(admin: httpx.Client) -> None:
    admin.post(f"{API}/users", json={"id": "cr-user"})
    assert admin.get(f"{API}/users/cr-user/credits").json() == {"user_id": "cr-user", "balance": 0}
    assert admin.post(f"{API}/users/cr-user/credits", json={"set": 10}).json()["balance"] == 10
    assert admin.post(f"{API}/users/cr-user/credits", json={"add": -3}).json()["balance"] == 7
    assert_error(admin.post(f"{API}/users/cr-user/credits", json={"set": -1}), 422, "validation_failed", "set")
    assert_error(admin.post(f"{API}/users/cr-user/credits", json={}), 422, "validation_failed", "add")
    assert_error(admin.post(f"{API}/users/cr-user/credits", json={"add": 1, "set": 2}), 422, "validation_failed", "add")
    assert_error(admin.post(f"{API}/users/nobody/credits", json={"add": 1}), 404, "not_found")


def test_keys_lifecycle_and_revocation_on_the_next_public_request(gw: GatewayProcess, admin: httpx.Client) -> None:
    admin.post(f"{API}/users", json={"id": "kl-user"})
    created = admin.post(f"{API}/keys", json={"user_id": "kl-user", "name": "web", "expires_in": "30d"})
    assert created.status_code == 201
    key = created.json()
    assert set(key) == {"id", "key", "prefix", "user_id", "name", "created_at", "expires_at", "rate_limits"}
    public = {"Authorization": f"Bearer {key['key']}"}
    assert httpx.get(gw.url + "/api/v1/templates", headers=public).status_code == 200

    shown = admin.get(f"{API}/keys/{key['id']}").json()
    assert shown["status"] == "active" and "key" not in shown and shown["requests"] >= 0
    limits = admin.put(f"{API}/keys/{key['id']}/rate-limits", json={"rate_limits": ["7/minute"]})
    assert limits.json()["rate_limits"] == ["7/minute"]
    assert httpx.get(gw.url + "/api/v1/templates", headers=public).headers["x-ratelimit-limit"] == "7"

    assert admin.delete(f"{API}/keys/{key['id']}").status_code == 204
    assert httpx.get(gw.url + "/api/v1/templates", headers=public).status_code == 401
    assert admin.delete(f"{API}/keys/{key['id']}").status_code == 204  # already revoked: still 204
    assert admin.get(f"{API}/keys/{key['id']}").json()["status"] == "revoked"
    assert_error(admin.delete(f"{API}/keys/key_nope"), 404, "not_found")


def test_key_errors(admin: httpx.Client) -> None:
    assert_error(admin.post(f"{API}/keys", json={"user_id": "nobody"}), 404, "not_found")
    assert_error(admin.post(f"{API}/keys", json={}), 422, "validation_failed", "user_id")
    admin.post(f"{API}/users", json={"id": "ke-user"})
    bad: dict[str, Any] = {"user_id": "ke-user", "expires_in": "soon"}
    assert_error(admin.post(f"{API}/keys", json=bad), 422, "validation_failed", "expires_in")
    bad = {"user_id": "ke-user", "rate_limits": "5/minute"}
    assert_error(admin.post(f"{API}/keys", json=bad), 422, "validation_failed", "rate_limits")
    bad = {"user_id": "ke-user", "rate_limits": ["lots"]}
    assert_error(admin.post(f"{API}/keys", json=bad), 422, "validation_failed", "rate_limits")


def test_rotate(gw: GatewayProcess, admin: httpx.Client) -> None:
    admin.post(f"{API}/users", json={"id": "rot-user"})
    old = admin.post(f"{API}/keys", json={"user_id": "rot-user", "name": "ci"}).json()
    rotated = admin.post(f"{API}/keys/{old['id']}/rotate", json={"grace": 3600})
    assert rotated.status_code == 201
    new = rotated.json()
    assert new["replaces"] == old["id"] and new["name"] == "ci" and new["replaced_key_stops_at"]
    for key in (old["key"], new["key"]):  # in its grace period the old one still works
        assert httpx.get(gw.url + "/api/v1/templates", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert_error(admin.post(f"{API}/keys/{old['id']}/rotate", json={"grace": "x"}), 422, "validation_failed", "grace")


def test_rotating_a_key_in_its_grace_period_again_is_refused_and_names_its_replacement(admin: httpx.Client) -> None:
    admin.post(f"{API}/users", json={"id": "rot2-user"})
    old = admin.post(f"{API}/keys", json={"user_id": "rot2-user", "expires_in": "30d"}).json()
    first = admin.post(f"{API}/keys/{old['id']}/rotate", json={"grace": "10m"}).json()
    assert first["expires_at"] == old["expires_at"]  # the replacement keeps the original expiry
    again = admin.post(f"{API}/keys/{old['id']}/rotate", json={"grace": "10m"})  # a retried POST
    assert again.status_code == 409
    assert again.json() == {
        "error": {
            "code": "conflict",
            "message": f"key {old['id']} was rotated already: its replacement is {first['id']}",
        }
    }
    shown = admin.get(f"{API}/keys/{old['id']}").json()
    assert shown["replaced_by"] == first["id"] and shown["status"] == "active"  # in its grace period
    assert admin.get(f"{API}/keys/{first['id']}").json()["replaced_by"] is None
    items = admin.get(f"{API}/keys", params={"user_id": "rot2-user"}).json()["items"]
    assert [key["id"] for key in items] == [old["id"], first["id"]]  # no second replacement was made


def test_list_keys_pages_and_filters(admin: httpx.Client) -> None:
    admin.post(f"{API}/users", json={"id": "page-user"})
    ids = [admin.post(f"{API}/keys", json={"user_id": "page-user"}).json()["id"] for _ in range(5)]
    admin.delete(f"{API}/keys/{ids[0]}")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"user_id": "page-user", "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = admin.get(f"{API}/keys", params=params).json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    active = admin.get(f"{API}/keys", params={"user_id": "page-user", "status": "active"}).json()["items"]
    assert [k["id"] for k in active] == ids[1:]
    assert_error(admin.get(f"{API}/keys", params={"status": "lost"}), 422, "validation_failed", "status")
    assert_error(admin.get(f"{API}/keys", params={"limit": 0}), 422, "validation_failed", "limit")
    assert_error(admin.get(f"{API}/keys", params={"cursor": "!!"}), 422, "validation_failed", "cursor")
    assert_error(admin.get(f"{API}/keys", params={"user_id": "nobody"}), 404, "not_found")


def test_usage(gw: GatewayProcess, admin: httpx.Client) -> None:
    items = admin.get(f"{API}/usage", params={"user_id": gw.user_id}).json()["items"]
    assert [item["user_id"] for item in items] == [gw.user_id]
    assert set(items[0]) == {
        "user_id",
        "requests",
        "rate_limited",
        "credits",
        "last_used_at",
        "legacy_keys",
        "legacy_last_used_at",
    }


def test_the_public_listener_answers_no_admin_path(gw: GatewayProcess) -> None:
    response = httpx.get(gw.url + f"{API}/keys", headers=gw.auth | {"x-stub": "1"})
    assert response.status_code == 200
    assert response.json()["raw_path"] == f"{API}/keys"  # the stub's echo: it went upstream


def test_readyz_reports_an_unreachable_upstream(gateway_factory: GatewayFactory) -> None:
    server = gateway_factory(
        {"upstream": {"url": f"http://127.0.0.1:{free_port()}"}, "health": {"check_upstream": True}}, admin=True
    )
    response = httpx.get(f"{server.admin_url}/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable" and response.json()["reason"].startswith("upstream")


def test_admin_api_is_off_without_a_token(gateway_factory: GatewayFactory) -> None:
    server = gateway_factory()
    assert server.wait_for_log("the admin API is off")


def test_readyz_reports_a_store_file_that_is_gone(gateway_factory: GatewayFactory) -> None:
    server = gateway_factory(admin=True)
    database = Path(server.config.store.url.removeprefix("sqlite:///"))
    assert httpx.get(f"{server.admin_url}/readyz").status_code == 200
    moved = database.with_suffix(".moved")
    database.rename(moved)
    try:
        gone = httpx.get(f"{server.admin_url}/readyz")
        assert gone.status_code == 503
        assert gone.json()["status"] == "unavailable"
        assert gone.json()["reason"].startswith(f"store: {database}")
    finally:
        moved.rename(database)
    assert httpx.get(f"{server.admin_url}/readyz").status_code == 200


def test_readyz_reports_a_store_file_that_was_replaced(gateway_factory: GatewayFactory) -> None:
    server = gateway_factory(admin=True)
    database = Path(server.config.store.url.removeprefix("sqlite:///"))
    # A copy put in its place, as a restore from backup would: the CLI now writes to the copy.
    copy = database.with_suffix(".copy")
    shutil.copyfile(database, copy)
    copy.replace(database)
    response = httpx.get(f"{server.admin_url}/readyz")
    assert response.status_code == 503
    assert "was replaced" in response.json()["reason"]


# ------------------------------------------------------------------- issue 15: one consistent API


def test_unknown_paths_and_methods_answer_in_the_envelope(gw: GatewayProcess, admin: httpx.Client) -> None:
    assert_error(admin.get(f"{API}/nothing-here"), 404, "not_found")
    assert_error(httpx.get(f"{gw.admin_url}/nothing-here"), 404, "not_found")  # outside /admin/v1/: no token
    for method, path, allowed in (
        ("DELETE", f"{API}/keys", "GET, HEAD, POST"),
        ("PATCH", f"{API}/users/someone", "DELETE, GET, HEAD"),
        ("POST", f"{API}/users/someone/credits", None),  # POST is one of its methods: not a 405
        ("PUT", "/healthz", "GET, HEAD"),
    ):
        response = admin.request(method, path, json={})
        if allowed is None:
            assert response.status_code != 405
            continue
        assert_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == allowed
    # HEAD is GET without the body, as for any server (RFC 9110).
    head = httpx.head(f"{gw.admin_url}/healthz")
    assert head.status_code == 200 and head.content == b""
    assert admin.head(f"{API}/keys").status_code == 200


def test_every_operation_refuses_an_unknown_query_parameter(gw: GatewayProcess, admin: httpx.Client) -> None:
    document = httpx.get(f"{gw.admin_url}{API}/openapi.json").json()
    tried = 0
    for path, operations in document["paths"].items():
        if not path.startswith(API + "/"):
            continue  # the probes and /metrics take what orchestrators and scrapers send
        for method in operations:
            url = path.replace("{user_id}", gw.user_id).replace("{key_id}", gw.key_id)
            response = admin.request(method, url, params={"colour": "red"}, json={})
            assert_error(response, 422, "validation_failed", "colour")
            assert response.json()["error"]["message"] == "unknown query parameter 'colour'"
            tried += 1
    assert tried == 23


def test_the_subscription_is_set_by_its_documents_name_and_by_its_old_one(admin: httpx.Client) -> None:
    admin.post(f"{API}/users", json={"id": "sub-user"})
    url = f"{API}/users/sub-user/subscription"
    assert admin.put(url, json={"subscription": "inactive"}).json()["subscription"] == "inactive"
    assert admin.put(url, json={"status": "active"}).json()["subscription"] == "active"  # deprecated, still read
    assert_error(admin.put(url, json={"subscription": "paused"}), 422, "validation_failed", "subscription")
    assert_error(admin.put(url, json={}), 422, "validation_failed", "subscription")
    both = {"subscription": "active", "status": "active"}
    assert_error(admin.put(url, json=both), 422, "validation_failed", "status")


def test_what_pydantic_says_never_shows(admin: httpx.Client) -> None:
    """Every refusal is one line in the envelope, naming one field: not FastAPI's list of errors."""
    for response in (
        admin.post(f"{API}/users", json={"id": 7, "colour": "red", "subscription": 1}),
        admin.post(f"{API}/keys", json={"user_id": "x", "expires_in": "soon", "name": 5}),
        admin.get(f"{API}/keys", params={"limit": "many", "status": "lost"}),
        admin.post(f"{API}/users/nobody/credits", json={"add": "1"}),
        admin.post(f"{API}/users", content=b"[1, 2]"),
        admin.post(f"{API}/users", content=b"[" * 100_000),
    ):
        assert set(response.json()) == {"error"}, response.text
        assert response.status_code in (400, 422) and "\n" not in response.json()["error"]["message"]
    assert_error(admin.post(f"{API}/users", json={"id": "x", "colour": "red"}), 422, "validation_failed", "colour")
    assert admin.post(f"{API}/users", json={"id": "x", "colour": "red"}).json()["error"]["message"] == (
        "unknown field 'colour'"
    )
    assert admin.get(f"{API}/keys", params={"limit": 0}).json()["error"]["message"] == (
        "limit: a whole number from 1 to 200"
    )
    assert_error(admin.post(f"{API}/users", content=b"[1, 2]"), 400, "invalid_json")


def test_a_body_is_json_whatever_its_content_type_and_empty_is_an_empty_object(admin: httpx.Client) -> None:
    # As before FastAPI: curl -d sends application/x-www-form-urlencoded.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert admin.post(f"{API}/users", content=b'{"id": "ct-user"}', headers=form).status_code == 201
    assert_error(admin.post(f"{API}/users"), 422, "validation_failed", "id")  # no body: {} (id is required)
    key = admin.post(f"{API}/keys", json={"user_id": "ct-user"}).json()
    assert admin.post(f"{API}/keys/{key['id']}/rotate").status_code == 201  # no body: no grace


def test_list_users_pages_and_filters_by_id_prefix(admin: httpx.Client) -> None:
    ids = [f"lu-{n}" for n in range(5)]
    for user_id in ids:
        admin.post(f"{API}/users", json={"id": user_id})
    admin.post(f"{API}/users", json={"id": "other-lu-0"})
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"q": "lu-", "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = admin.get(f"{API}/users", params=params).json()
        assert set(page) == {"items", "next_cursor"} and len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids  # oldest first, other-lu-0 left out
    everyone = admin.get(f"{API}/users", params={"limit": 200}).json()
    assert {"alice", "other-lu-0", *ids} <= {user["id"] for user in everyone["items"]}
    assert everyone["next_cursor"] is None
    assert admin.get(f"{API}/users", params={"q": "no-such-prefix"}).json() == {"items": [], "next_cursor": None}
    assert_error(admin.get(f"{API}/users", params={"cursor": "!!"}), 422, "validation_failed", "cursor")
    assert_error(admin.get(f"{API}/users", params={"limit": 201}), 422, "validation_failed", "limit")


def test_deleting_a_user_revokes_every_key_of_it_at_the_next_request(gw: GatewayProcess, admin: httpx.Client) -> None:
    admin.post(f"{API}/users", json={"id": "gone-user"})
    keys = [admin.post(f"{API}/keys", json={"user_id": "gone-user"}).json() for _ in range(2)]
    for key in keys:
        assert httpx.get(gw.url + "/x", headers={"Authorization": f"Bearer {key['key']}"}).status_code == 200

    assert admin.delete(f"{API}/users/gone-user").status_code == 204
    for key in keys:
        assert httpx.get(gw.url + "/x", headers={"Authorization": f"Bearer {key['key']}"}).status_code == 401
        assert admin.get(f"{API}/keys/{key['id']}").json()["status"] == "revoked"
    # The record stays, inactive, so that a key made later does not work either; so does its usage.
    assert admin.get(f"{API}/users/gone-user").json()["subscription"] == "inactive"
    later = admin.post(f"{API}/keys", json={"user_id": "gone-user"}).json()
    assert httpx.get(gw.url + "/x", headers={"Authorization": f"Bearer {later['key']}"}).status_code == 403
    assert [item["user_id"] for item in admin.get(f"{API}/usage", params={"user_id": "gone-user"}).json()["items"]] == [
        "gone-user"
    ]
    assert admin.delete(f"{API}/users/gone-user").status_code == 204  # again: nothing more to do
    assert_error(admin.delete(f"{API}/users/nobody"), 404, "not_found")
    # Another user's key is untouched.
    assert httpx.get(gw.url + "/x", headers=gw.auth).status_code == 200


def test_attack_round_two_answers_stay_in_the_envelope_and_never_echo_a_key(
    gw: GatewayProcess, admin: httpx.Client
) -> None:
    deleted = admin.delete(f"{API}/users/{gw.key}")
    assert deleted.status_code == 404 and gw.key not in deleted.text
    added = admin.post(f"{API}/users", json={"id": f"Bearer {gw.key}"})
    assert added.status_code == 422 and gw.key not in added.text
    for cursor in (
        base64.urlsafe_b64encode(b"[1" + b"0" * 400 + b', "a"]').decode(),  # a float too large
        base64.urlsafe_b64encode(b"[" * 3000).decode(),  # nested too deep
    ):
        assert_error(admin.get(f"{API}/keys", params={"cursor": cursor}), 422, "validation_failed", "cursor")
        assert_error(admin.get(f"{API}/users", params={"cursor": cursor}), 422, "validation_failed", "cursor")
    slash = admin.get(f"{API}/users/", follow_redirects=False)  # no redirect built from the Host header
    assert_error(slash, 404, "not_found")


def test_a_full_key_is_looked_up_without_being_echoed(gw: GatewayProcess, admin: httpx.Client) -> None:
    found = admin.post(f"{API}/keys/lookup", json={"key": gw.key})
    assert found.status_code == 200
    assert (found.json()["id"], found.json()["user_id"]) == (gw.key_id, gw.user_id)
    assert gw.key not in found.text
    made_up = "mk_live_" + "A" * 46
    unknown = admin.post(f"{API}/keys/lookup", json={"key": made_up})
    assert_error(unknown, 404, "not_found")
    assert "AAAA" not in unknown.text
    assert_error(admin.post(f"{API}/keys/lookup", json={}), 422, "validation_failed", "key")
    assert_error(admin.post(f"{API}/keys/lookup", json={"key": f" {gw.key}\u3000"}), 404, "not_found")  # exactly
    misplaced = admin.post(f"{API}/keys/lookup", json={gw.key: 1})  # a key sent as a field name
    assert misplaced.status_code == 422 and gw.key not in misplaced.text


def test_export_streams_what_gateway_export_writes(gw: GatewayProcess, admin: httpx.Client) -> None:
    answer = admin.get(f"{API}/export")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/x-ndjson")
    over_http = [json.loads(line) for line in answer.text.splitlines()]
    from_cli = [json.loads(line) for line in gateway_cli(gw.config_path, "export").stdout.splitlines()]
    # The same lines, but for counts the usage flush may have moved between the two reads.
    moving = {"requests", "rate_limited", "credits", "last_used_at"}

    def steady(lines: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{name: value for name, value in line.items() if name not in moving} for line in lines]

    assert steady(over_http) == steady(from_cli) and any(line.get("id") == gw.key_id for line in over_http)
    assert gw.key not in answer.text
    assert httpx.get(f"{gw.admin_url}{API}/export").status_code == 401  # the token, as everywhere


def test_named_admin_tokens_each_open_the_api(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    ops, ci = tmp_path / "ops-token", tmp_path / "ci-token"
    ops.write_text("ops-token-0123456789abcdef\n")
    ci.write_text("ci-token-0123456789abcdef")
    tokens = [{"name": "ops", "token_file": str(ops)}, {"name": "ci", "token_file": str(ci)}]
    server = gateway_factory({"admin": {"tokens": tokens}}, admin=True)
    for token in (GatewayProcess.ADMIN_TOKEN, "ops-token-0123456789abcdef", "ci-token-0123456789abcdef"):
        answer = httpx.get(f"{server.admin_url}{API}/users", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, token
    assert_error(
        httpx.get(f"{server.admin_url}{API}/users", headers={"Authorization": "Bearer ops-token-0123456789abcdeX"}),
        401,
        "unauthorized",
    )
    assert server.wait_for_log("(tokens: admin, ops, ci)")


def test_a_key_is_updated_by_the_fields_given(gw: GatewayProcess, admin: httpx.Client) -> None:
    admin.post(f"{API}/users", json={"id": "patch-user"})
    key = admin.post(f"{API}/keys", json={"user_id": "patch-user", "name": "web"}).json()
    url = f"{API}/keys/{key['id']}"

    changed = admin.patch(url, json={"metadata": {"team": "mobile", "seats": 3}})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["metadata"]) == ("web", {"team": "mobile", "seats": 3})
    assert admin.get(url).json()["metadata"] == {"team": "mobile", "seats": 3}
    changed = admin.patch(url, json={"name": "web-2", "expires_at": "2031-01-01T00:00:00Z", "metadata": None})
    assert [changed.json()[name] for name in ("name", "expires_at", "metadata")] == [
        "web-2",
        "2031-01-01T00:00:00Z",
        None,
    ]
    # A past expiry stops the key at its next request, as a revocation does.
    public = {"Authorization": f"Bearer {key['key']}"}
    assert httpx.get(gw.url + "/api/v1/templates", headers=public).status_code == 200
    assert admin.patch(url, json={"expires_at": "2020-01-01"}).json()["status"] == "expired"
    assert httpx.get(gw.url + "/api/v1/templates", headers=public).status_code == 401

    assert_error(admin.patch(url, json={}), 422, "validation_failed", "name")
    assert_error(admin.patch(url, json={"metadata": [1]}), 422, "validation_failed", "metadata")
    assert_error(admin.patch(url, json={"metadata": {"x": "y" * 3000}}), 422, "validation_failed", "metadata")
    assert_error(admin.patch(url, json={"expires_at": "soon"}), 422, "validation_failed", "expires_at")
    assert_error(admin.patch(url, json={"prefix": "mine"}), 422, "validation_failed", "prefix")
    assert_error(admin.patch(f"{API}/keys/key_nope", json={"name": "x"}), 404, "not_found")
    leaked = admin.patch(url, json={"metadata": {"note": key["key"]}})
    assert_error(leaked, 422, "validation_failed", "metadata")
    assert key["key"] not in leaked.text


def test_the_audit_names_the_token_and_the_request_of_every_change(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    ops = tmp_path / "ops-token"
    ops.write_text("ops-token-0123456789abcdef\n")
    server = gateway_factory({"admin": {"tokens": [{"name": "ops", "token_file": str(ops)}]}}, admin=True)
    assert server.admin_url is not None
    as_ops = {"Authorization": "Bearer ops-token-0123456789abcdef"}
    with httpx.Client(base_url=server.admin_url, headers=as_ops, timeout=10) as client:
        added = client.post(f"{API}/users", json={"id": "audited"}, headers={"X-Request-Id": "ticket-4711"})
        assert added.headers["x-request-id"] == "ticket-4711"
        created = client.post(f"{API}/keys", json={"user_id": "audited", "name": "ci"})
        made_id = created.headers["x-request-id"]
        key = created.json()
        assert client.delete(f"{API}/keys/{key['id']}").status_code == 204

        page = client.get(f"{API}/audit", params={"actor": "ops"}).json()
        assert [(e["action"], e["target"], e["via"]) for e in page["items"]] == [
            ("key.revoke", key["id"], "api"),
            ("key.create", key["id"], "api"),
            ("user.add", "audited", "api"),
        ]
        assert [e["request_id"] for e in page["items"][1:]] == [made_id, "ticket-4711"]
        assert key["key"] not in json.dumps(page)
        assert page["next_cursor"] is None

        first = client.get(f"{API}/audit", params={"target": key["id"], "limit": 1}).json()
        assert [e["action"] for e in first["items"]] == ["key.revoke"]
        rest = client.get(f"{API}/audit", params={"target": key["id"], "cursor": first["next_cursor"]}).json()
        assert [e["action"] for e in rest["items"]] == ["key.create"]
        assert client.get(f"{API}/audit", params={"action": "user.add", "since": "2000-01-01"}).json()["items"]
        # A key pasted for a request id is neither echoed nor kept.
        pasted = client.put(
            f"{API}/users/audited/subscription", json={"subscription": "inactive"}, headers={"X-Request-Id": key["key"]}
        )
        assert pasted.status_code == 200 and key["key"] not in pasted.headers["x-request-id"]
        assert key["key"] not in json.dumps(client.get(f"{API}/audit").json())
        assert not client.get(f"{API}/audit", params={"since": "2999-01-01T00:00:00Z"}).json()["items"]
        assert_error(client.get(f"{API}/audit", params={"cursor": "nope"}), 422, "validation_failed", "cursor")
        assert_error(client.get(f"{API}/audit", params={"action": "drop"}), 422, "validation_failed", "action")

    # The CLI's changes are the operating system user's.
    done = gateway_cli(server.config_path, "users", "add", "by-cli")
    assert done.returncode == 0, done.stderr
    shown = gateway_cli(server.config_path, "audit", "--target", "by-cli")
    assert shown.returncode == 0, shown.stderr
    assert "cli:" in shown.stdout and "user.add" in shown.stdout
