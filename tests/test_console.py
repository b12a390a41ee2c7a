"""The operator console in process: the admin app on a real SQLite store, driven through
httpx's ASGITransport as a browser without JavaScript would (forms, cookies, redirects)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import httpx
import pytest
import yaml

from gateway.accounting.metrics import Metrics
from gateway.admin.api import create_admin_app
from gateway.admin.console.headers import CONTENT_SECURITY_POLICY
from gateway.config import load_config
from tests.inprocess import Lifespan

TOKEN = "console-admin-token-0123456789"
OPS_TOKEN = "ops-console-token-9876543210"


class Browser:
    """A client that keeps the console's cookies and reads the forms' hidden tokens."""

    def __init__(self, client: httpx.AsyncClient, metrics: Metrics) -> None:
        self.client = client
        self.metrics = metrics
        self.csrf = ""

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(path, **kwargs)

    async def post(self, path: str, data: dict[str, str], *, csrf: bool = True) -> httpx.Response:
        return await self.client.post(path, data=({"csrf": self.csrf} if csrf else {}) | data)

    async def sign_in(self, token: str = TOKEN, next_page: str = "/console/") -> httpx.Response:
        form = await self.get("/console/sign-in")
        form_token = re.search(r'name="form_token" value="([^"]+)"', form.text)
        assert form_token is not None
        answer = await self.client.post(
            "/console/sign-in", data={"form_token": form_token[1], "token": token, "next": next_page}
        )
        if answer.status_code == 303:
            page = await self.get(answer.headers["location"])
            self.csrf = hidden(page.text, "csrf")
        return answer


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert found is not None, html
    return found[1]


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    (tmp_path / "ops").write_text(OPS_TOKEN)
    settings = {
        "store": {"url": f"sqlite:///{tmp_path}/gateway.db"},
        "admin": {"tokens": [{"name": "ops", "token_file": str(tmp_path / "ops")}]},
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(settings))
    config = load_config(tmp_path / "gateway.yaml", environ={"GATEWAY_ADMIN_TOKEN": TOKEN})
    metrics = Metrics()
    app = create_admin_app(config, metrics)
    lifespan = Lifespan(app)
    await lifespan.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as client:
        yield Browser(client, metrics)
    await lifespan.stop()


PAGES = ["/console/", "/console/users", "/console/users/alice", "/console/keys/key_x", "/console/audit"]


@pytest.mark.parametrize("path", PAGES)
async def test_an_anonymous_visitor_is_sent_to_the_sign_in_form(browser: Browser, path: str) -> None:
    answer = await browser.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in?next=")
    form = await browser.get(answer.headers["location"])
    assert 'for="token">Admin token</label>' in form.text and ">Sign in</button>" in form.text
    # Signing in goes back to the page asked for.
    signed_in = await browser.sign_in(next_page=hidden(form.text, "next"))
    assert signed_in.headers["location"] == path


async def test_console_without_its_slash_and_an_unknown_page(browser: Browser) -> None:
    answer = await browser.get("/console")
    assert (answer.status_code, answer.headers["location"]) == (307, "/console/")
    assert (await browser.get("/console/nothing-here")).status_code == 303  # anonymous: sign in first
    await browser.sign_in()
    missing = await browser.get("/console/nothing-here")
    assert missing.status_code == 404 and "no such page" in missing.text


async def test_signing_in_takes_any_admin_token_and_refuses_others(browser: Browser) -> None:
    refused = await browser.sign_in("not-a-token-of-this-gateway")
    assert refused.status_code == 401 and "not an admin token" in refused.text
    assert browser.metrics.admin_auth_failures.value == 1
    assert "gateway_console=" not in refused.headers.get("set-cookie", "")
    signed_in = await browser.sign_in(OPS_TOKEN)
    assert signed_in.status_code == 303
    cookie = signed_in.headers["set-cookie"]
    assert "gateway_console=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/console/" in cookie and "Secure" not in cookie  # console.secure_cookies is off
    overview = await browser.get("/console/")
    assert "Signed in as <strong>ops</strong>" in overview.text


async def test_the_sign_in_form_needs_its_own_token(browser: Browser) -> None:
    # A form posted from another site's page carries no form token of this console's.
    answer = await browser.client.post("/console/sign-in", data={"token": TOKEN})
    assert answer.status_code == 403 and "gateway_console=" not in answer.headers.get("set-cookie", "")


async def test_each_sign_in_makes_a_new_session_and_ends_the_one_before(browser: Browser) -> None:
    await browser.sign_in()
    first = browser.client.cookies["gateway_console"]
    await browser.sign_in()
    second = browser.client.cookies["gateway_console"]
    assert first != second
    browser.client.cookies.set("gateway_console", first, domain="admin.test", path="/console/")
    assert (await browser.get("/console/")).status_code == 303


async def test_every_page_has_the_security_headers(browser: Browser) -> None:
    pages = ["/console/sign-in"]
    await browser.sign_in()
    for path in [*pages, *PAGES[:3], "/console/static/console.css", "/console/static/console.js"]:
        if path == "/console/users/alice":
            await browser.post("/console/users", {"user_id": "alice", "subscription": "active"})
        answer = await browser.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["cache-control"] == "no-store"
        if path.endswith(".js"):
            continue
        # No inline script or event handler, and nothing from another host.
        assert not re.search(r"<script(?![^>]*\bsrc=\"/console/static/)", answer.text), path
        assert not re.search(r"\son[a-z]+=", answer.text), path
        assert not re.search(r"(src|href)=\"(https?:)?//", answer.text), path


async def test_a_post_without_the_csrf_token_is_refused(browser: Browser) -> None:
    await browser.sign_in()
    for data in ({}, {"csrf": "wrong"}, {"csrf": browser.csrf + "x"}):
        answer = await browser.client.post("/console/users", data={"user_id": "mallory"} | data)
        assert answer.status_code == 403
        assert "<h1>Refused</h1>" in answer.text and "security token (CSRF)" in answer.text
    assert "mallory" not in (await browser.get("/console/users")).text
    # A token of another session is not this session's.
    other = browser.csrf
    await browser.sign_in()
    assert (await browser.post("/console/users", {"csrf": other, "user_id": "mallory"}, csrf=False)).status_code == 403


async def test_a_user_and_a_key_from_creation_to_revocation(browser: Browser) -> None:
    await browser.sign_in()
    added = await browser.post("/console/users", {"user_id": "team/a", "subscription": "active"})
    assert added.status_code == 303
    user_page = await browser.get(added.headers["location"])
    assert "User added." in user_page.text and "team/a" in user_page.text
    form = await browser.get("/console/new-key/team%2Fa")
    for label in ("Name", "Expires in", "Rate limits"):
        assert f">{label}</label>" in form.text
    created = await browser.post("/console/new-key/team%2Fa", {"name": "ci", "expires_in": "30d", "rate_limits": ""})
    assert created.status_code == 200
    key = re.search(r'id="new-key"[^>]*value="([^"]+)"', created.text)
    assert key is not None and key[1].startswith("mk_live_")
    assert "readonly" in created.text and ">Copy</button>" in created.text and "will not be shown again" in created.text
    key_id = re.search(r'/console/keys/(key_\w+)/rotate"', created.text)
    assert key_id is not None
    seen = []
    for path in ("/console/", "/console/users", "/console/users/team%2Fa", f"/console/keys/{key_id[1]}"):
        seen.append((await browser.get(path)).text)
    limits = await browser.post(f"/console/keys/{key_id[1]}/rate-limits", {"rate_limits": "5/minute; 100/day"})
    assert limits.headers["location"] == f"/console/keys/{key_id[1]}?done=limits"
    key_page = await browser.get(limits.headers["location"])
    assert 'value="5/minute; 100/day"' in key_page.text and "Limits saved" in key_page.text
    confirm = await browser.get(f"/console/keys/{key_id[1]}/revoke")
    assert ">Revoke key</button>" in confirm.text
    revoked = await browser.post(f"/console/keys/{key_id[1]}/revoke", {})
    after = await browser.get(revoked.headers["location"])
    assert "Key revoked" in after.text and ">revoked</span>" in after.text
    audit = await browser.get("/console/audit")
    seen += [key_page.text, confirm.text, after.text, audit.text]
    assert not [page for page in seen if key[1] in page]
    # Each change is in the audit log, the signed-in token's and the console's, with the request
    # id its answer carried.
    for action, answer in (("key.create", created), ("key.rate_limits", limits), ("key.revoke", revoked)):
        row = re.search(rf"<tr>(?:(?!</tr>).)*<code>{re.escape(action)}</code>(?:(?!</tr>).)*</tr>", audit.text, re.S)
        assert row is not None, action
        assert 'admin <span class="hint">(console)</span>' in row[0]
        assert f"<code>{answer.headers['x-request-id']}</code>" in row[0] and key_id[1] in row[0]
    assert "<code>user.add</code>" in audit.text
    # The key's page lists its own events, and the filter finds them.
    assert key_page.text.count("<code>key.") == 2  # created, limits (the revocation came after)
    filtered = await browser.get("/console/audit", params={"action": "key.revoke"})
    assert filtered.text.count("<code>key.revoke</code>") == 1 and "<code>key.create</code>" not in filtered.text


async def test_rotating_shows_the_new_key_once_and_the_old_one_stops(browser: Browser) -> None:
    await browser.sign_in()
    await browser.post("/console/users", {"user_id": "bob", "subscription": "active"})
    created = await browser.post("/console/new-key/bob", {"name": "app", "expires_in": "", "rate_limits": ""})
    old_id = re.search(r'/console/keys/(key_\w+)/rotate"', created.text)
    assert old_id is not None
    rotated = await browser.post(f"/console/keys/{old_id[1]}/rotate", {})
    new_key = re.search(r'id="new-key"[^>]*value="([^"]+)"', rotated.text)
    assert new_key is not None
    page = await browser.get("/console/users/bob")
    assert page.text.count(">revoked</span>") == 1 and page.text.count(">active</span>") == 2  # the user, the key
    assert new_key[1] not in page.text


@pytest.mark.parametrize(
    ("path", "data", "status", "message"),
    [
        pytest.param("/console/users", {"user_id": "bob"}, 409, "exists already", id="existing-user"),
        pytest.param("/console/users", {"user_id": "has space"}, 422, "user", id="bad-user-id"),
        pytest.param("/console/new-key/bob", {"expires_in": "soon"}, 422, "a duration such as", id="bad-expiry"),
        pytest.param("/console/new-key/bob", {"rate_limits": "lots"}, 422, "1000/minute", id="bad-limits"),
        pytest.param("/console/new-key/nobody", {}, 404, "no user", id="unknown-user"),
        pytest.param("/console/keys/key_none/revoke", {}, 404, "no key", id="unknown-key"),
    ],
)
async def test_what_the_service_refuses_is_a_page_saying_so(
    browser: Browser, path: str, data: dict[str, str], status: int, message: str
) -> None:
    await browser.sign_in()
    await browser.post("/console/users", {"user_id": "bob", "subscription": "active"})
    answer = await browser.post(path, data)
    assert answer.status_code == status and message in answer.text
    assert answer.headers["content-type"].startswith("text/html")


async def test_users_are_searched_by_prefix_and_paged(browser: Browser) -> None:
    await browser.sign_in()
    for number in range(53):
        await browser.post("/console/users", {"user_id": f"user-{number:02}", "subscription": "active"})
    await browser.post("/console/users", {"user_id": "other", "subscription": "inactive"})
    first = await browser.get("/console/users", params={"q": "user-"})
    assert first.text.count('href="/console/users/user-') == 50 and "other" not in first.text
    next_page = re.search(r'href="(/console/users\?[^"]+)">Next page', first.text)
    assert next_page is not None
    second = await browser.get(next_page[1].replace("&amp;", "&"))
    assert second.text.count('href="/console/users/user-') == 3 and "Next page" not in second.text
    assert 'for="q">Search users</label>' in first.text
    audit = await browser.get("/console/audit")
    assert audit.text.count("<code>user.add</code>") == 50
    older = re.search(r'href="(/console/audit\?cursor=[^"]+)">Older events', audit.text)
    assert older is not None
    assert (await browser.get(older[1])).text.count("<code>user.add</code>") == 4


async def test_the_subscription_switch(browser: Browser) -> None:
    await browser.sign_in(OPS_TOKEN)
    await browser.post("/console/users", {"user_id": "carol", "subscription": "active"})
    switched = await browser.post("/console/subscription/carol", {"subscription": "inactive"})
    page = await browser.get(switched.headers["location"])
    assert ">inactive</span>" in page.text and ">Make active</button>" in page.text
    audit = await browser.get("/console/audit", params={"target": "carol", "actor": "ops"})
    assert "<code>user.subscription</code>" in audit.text and "<del>active</del> → <ins>inactive</ins>" in audit.text


async def test_sign_out_ends_the_session_on_the_server(browser: Browser) -> None:
    await browser.sign_in()
    cookie = browser.client.cookies["gateway_console"]
    signed_out = await browser.post("/console/sign-out", {})
    assert signed_out.headers["location"] == "/console/sign-in"
    browser.client.cookies.set("gateway_console", cookie, domain="admin.test", path="/console/")
    assert (await browser.get("/console/")).status_code == 303


async def test_the_overview_says_what_is_degraded_and_what_was_asked(browser: Browser) -> None:
    await browser.sign_in()
    for _ in range(3):
        browser.metrics.request("forwarded", 200, 0.001, 0.01)
    browser.metrics.request("invalid_key", 401, 0.001, None)
    overview = await browser.get("/console/")
    assert '<td>forwarded</td><td class="number">3</td>' in overview.text
    assert '<td>invalid_key</td><td class="number">1</td>' in overview.text
    assert "answering" in overview.text and "not configured" in overview.text
    assert 'role="img"' in overview.text and "<desc" in overview.text


async def test_the_admin_api_and_its_document_are_as_they_were(browser: Browser) -> None:
    document = (await browser.get("/admin/v1/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith("/console")]
    assert (await browser.get("/admin/v1/users")).status_code == 401


async def test_an_id_of_dots_and_slashes_never_takes_a_form_to_another_path(browser: Browser) -> None:
    await browser.sign_in()
    await browser.post("/console/users", {"user_id": "victim", "subscription": "active"})
    created = await browser.post("/console/new-key/victim", {"name": "app", "expires_in": "", "rate_limits": ""})
    key_id = re.search(r'/console/keys/(key_\w+)/rotate"', created.text)
    assert key_id is not None
    for crafted in (f"../keys/{key_id[1]}/revoke", "..", "."):
        await browser.post("/console/users", {"user_id": crafted, "subscription": "active"})
        page = await browser.get("/console/users/" + quote(crafted, safe="").replace(".", "%2E"))
        assert page.status_code == 200, crafted
        # Every form's action, as a browser resolves it, stays on this user's own paths.
        for action in re.findall(r'<form[^>]*action="([^"]+)"', page.text):
            resolved = urljoin("http://admin.test/console/users/x", action)
            assert "/keys/" not in resolved or crafted == "..", (crafted, action)
            assert "/../" not in resolved and not resolved.endswith("/.."), (crafted, action)
    assert ">active</span>" in (await browser.get(f"/console/keys/{key_id[1]}")).text


async def test_a_post_sent_from_another_site_is_refused(browser: Browser) -> None:
    await browser.sign_in()
    for site in ("same-site", "cross-site"):
        answer = await browser.client.post(
            "/console/users", data={"csrf": browser.csrf, "user_id": "mallory"}, headers={"Sec-Fetch-Site": site}
        )
        assert answer.status_code == 403 and "another site" in answer.text
    assert "mallory" not in (await browser.get("/console/users")).text


async def test_starlettes_own_refusals_under_the_console_are_pages_with_the_headers(browser: Browser) -> None:
    for method, path, status in (
        ("PUT", "/console/sign-in", 405),
        ("GET", "/console/static/nothing.css", 404),
        ("GET", "/console", 307),
    ):
        answer = await browser.client.request(method, path)
        assert answer.status_code == status, path
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        if status != 307:
            assert answer.headers["content-type"].startswith("text/html"), path
