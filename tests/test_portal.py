"""The self-service key portal (issue 16, step 1) in process: links minted by the admin API, the
portal app driven through httpx's ASGITransport as a browser without JavaScript would, on a real
SQLite store shared with the admin app, with a fake clock for the expiries."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from gateway.accounting.metrics import Metrics
from gateway.admin.api import create_admin_app
from gateway.admin.console.headers import content_security_policy
from gateway.config import load_config
from gateway.portal.app import COOKIE
from tests.inprocess import Lifespan
from tests.portal_support import FRAMERS, TOKEN, Setup, keys_shown, open_setup


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with open_setup(tmp_path) as opened:
        yield opened


async def test_the_admin_api_mints_a_one_time_link(setup: Setup) -> None:
    answer = await setup.link("alice", return_url="https://dash.example.com/account")
    assert answer.status_code == 201
    document = answer.json()
    assert set(document) == {"url", "expires_at"}
    assert document["url"].startswith("https://keys.example.com/portal/start?token=")
    token = document["url"].split("token=")[1]
    assert len(token) >= 43
    # Kept hashed only: the token is nowhere in the store's file.
    assert token.encode() not in Path(setup.config.store.url.removeprefix("sqlite:///")).read_bytes()
    assert (await setup.link("nobody")).status_code == 404
    refused = await setup.link("alice", return_url="https://evil.example.com/")
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "return_url"
    assert (await setup.link("alice", return_url="javascript:alert(1)")).status_code == 422
    no_token = await setup.admin.post("/admin/v1/users/alice/portal-sessions", json={})
    assert no_token.status_code == 401


async def test_a_link_while_the_portal_is_off_is_a_conflict(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{tmp_path}/g.db"}}))
    config = load_config(tmp_path / "gateway.yaml", environ={"GATEWAY_ADMIN_TOKEN": TOKEN})
    app = create_admin_app(config, Metrics())
    lifespan = Lifespan(app)
    await lifespan.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin.test") as admin:
            headers = {"authorization": f"Bearer {TOKEN}"}
            await admin.post("/admin/v1/users", json={"id": "alice"}, headers=headers)
            answer = await admin.post("/admin/v1/users/alice/portal-sessions", json={}, headers=headers)
        assert answer.status_code == 409 and "portal.port" in answer.json()["error"]["message"]
    finally:
        await lifespan.stop()


async def test_the_link_opens_a_session_once(setup: Setup) -> None:
    url = (await setup.link("alice")).json()["url"]
    browser = await setup.browser()
    start = await browser.client.get(urlsplit(url).path + "?" + urlsplit(url).query)
    assert start.status_code == 303 and start.headers["location"] == "/portal/"
    cookie = start.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Path=/portal/" in cookie and "Secure" not in cookie
    page = await browser.client.get("/portal/")
    assert page.status_code == 200 and "Your API keys" in page.text and ">Create API key</button>" in page.text
    # Replayed, in this browser or another: refused with a page, not a traceback.
    for other in (browser, await setup.browser()):
        again = await other.open(url)
        assert again.status_code == 403 and "open the portal again from the service" in again.text.lower()
    unknown = await browser.open("/portal/start?token=nothing")
    assert unknown.status_code == 403 and "Traceback" not in unknown.text
    assert (await browser.client.get("/portal/start")).status_code == 403


async def test_an_expired_link_and_an_ended_session(setup: Setup) -> None:
    url = (await setup.link("alice")).json()["url"]  # minted on the real clock
    setup.clock.now = time.time() + setup.config.portal.link_ttl + 1
    browser = await setup.browser()
    assert (await browser.open(url)).status_code == 403
    browser = await setup.browser("alice")
    assert (await browser.client.get("/portal/")).status_code == 200
    setup.clock.now += setup.config.portal.session_idle_timeout + 1
    ended = await browser.client.get("/portal/")
    assert ended.status_code == 401 and "open the portal again" in ended.text.lower()


async def test_create_and_revoke_a_key_recorded_as_the_portal_user(setup: Setup) -> None:
    browser = await setup.browser("alice")
    form = await browser.client.get("/portal/new-key")
    assert '<label for="name">Name</label>' in form.text and ">Create</button>" in form.text
    created = await browser.post("/portal/new-key", {"name": "ci"})
    assert created.status_code == 200
    assert '<label for="new-key">New key</label>' in created.text and ">Copy</button>" in created.text
    new_key = re.search(r'id="new-key" class="secret" type="text" value="([^"]+)" readonly', created.text)
    assert new_key is not None
    key = await setup.service.find_key(new_key[1])
    assert key.user_id == "alice" and key.name == "ci"
    # Shown once: the list shows its prefix only.
    listing = await browser.client.get("/portal/")
    assert new_key[1] not in listing.text and key.prefix in keys_shown(listing.text)
    assert ">Revoke</button>" in listing.text
    confirm = await browser.client.get(f"/portal/keys/{key.id}/revoke")
    assert ">Revoke key</button>" in confirm.text
    revoked = await browser.post(f"/portal/keys/{key.id}/revoke")
    assert revoked.status_code == 303 and revoked.headers["location"] == "/portal/?done=revoked"
    assert (await setup.service.get_key(key.id)).status(setup.service.now()) == "revoked"
    events, _ = await setup.service.audit_events(target=key.id)
    assert {(e.actor, e.via, e.action) for e in events} == {
        ("portal:alice", "portal", "key.create"),
        ("portal:alice", "portal", "key.revoke"),
    }
    assert all(e.request_id for e in events)


async def test_another_users_key_is_not_found(setup: Setup) -> None:
    alice_key = await setup.service.create_key("alice", name="alice's", expires_in=None, rate_limits=None)
    alice_id = alice_key.record.id
    bob = await setup.browser("bob")
    listing = await bob.client.get("/portal/")
    assert alice_key.record.prefix not in listing.text and "alice" not in listing.text
    for answer in (
        await bob.client.get(f"/portal/keys/{alice_id}/revoke"),
        await bob.post(f"/portal/keys/{alice_id}/revoke"),
    ):
        assert answer.status_code == 404
        assert answer.text.replace(alice_id, "X") == (await bob.client.get("/portal/keys/X/revoke")).text
    assert (await setup.service.get_key(alice_id)).status(setup.service.now()) == "active"


async def test_a_post_without_the_csrf_token_or_from_another_site_is_refused(setup: Setup) -> None:
    browser = await setup.browser("alice")
    no_token = await browser.post("/portal/new-key", {"name": "x"}, csrf=False)
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    cross_site = await browser.client.post(
        "/portal/new-key", data={"csrf": browser.csrf, "name": "x"}, headers={"sec-fetch-site": "cross-site"}
    )
    assert cross_site.status_code == 403 and "another site" in cross_site.text
    assert await setup.service.list_keys("alice") == []


async def test_the_security_headers_with_frame_ancestors_from_the_config(setup: Setup) -> None:
    browser = await setup.browser("alice")
    anonymous = await setup.browser()
    answers = [
        await browser.client.get("/portal/"),
        await browser.client.get("/portal/new-key"),
        await browser.client.get("/portal/nothing-here"),
        await browser.client.get("/portal/static/console.css"),
        await browser.client.delete("/portal/new-key"),
        await anonymous.client.get("/portal/"),
        await anonymous.client.get("/elsewhere"),
        await anonymous.client.get("/portal"),
    ]
    policy = content_security_policy(FRAMERS)
    assert f"frame-ancestors {FRAMERS};" in policy
    for answer in answers:
        assert answer.headers["content-security-policy"] == policy, answer.url
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert "x-frame-options" not in answer.headers  # it would forbid the frame the config allows
    assert answers[0].headers["cache-control"] == "no-store"
    assert [a.status_code for a in answers] == [200, 200, 404, 200, 405, 401, 404, 307]
