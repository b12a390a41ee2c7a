"""The self-service key portal in a real headless Chromium (Debian's, driven by Playwright), against
a real ``gateway serve`` with its public, admin and portal listeners and the upstream stub, as the
service's users use it: the service's backend (the test) asks the admin API for a link, the
user's browser opens it.

Controls are found by their accessible names (README, "The self-service key portal"): "Create API
key", "Name", "Create", "New key", "Copy", "Revoke", "Revoke key". With GATEWAY_SCREENSHOTS=1 the
tests also write docs/screenshots/portal.png.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Response, expect

from tests.browser import browser_context, chromium, screenshot
from tests.conftest import GatewayFactory
from tests.servers import GatewayProcess

ADMIN = {"Authorization": f"Bearer {GatewayProcess.ADMIN_TOKEN}"}
START_AGAIN = "Open the portal again from the service"


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory) -> GatewayProcess:
    """Its user ``alice`` (user A) has a key of her own already, "tests" (``gw.key``); a session may
    name a page of 127.0.0.1 (the gateway's own public listener here) to go back to."""
    return gateway_factory({"portal": {"return_url_hosts": ["127.0.0.1"]}}, admin=True, portal=True)


@pytest.fixture(scope="module")
def short_links(gateway_factory: GatewayFactory) -> GatewayProcess:
    """A gateway whose portal links open within 1 s only."""
    return gateway_factory({"portal": {"link_ttl": "1s"}}, admin=True, portal=True)


@pytest.fixture(scope="module")
def browser(gw: GatewayProcess, short_links: GatewayProcess) -> Iterator[Browser]:
    """Started after the gateways (tests/browser.py says why)."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    with browser_context(browser) as opened:
        yield opened


def portal(gw: GatewayProcess, path: str = "/") -> str:
    assert gw.portal_url is not None
    return f"{gw.portal_url}/portal{path}"


def add_user(gw: GatewayProcess, user_id: str) -> None:
    answer = httpx.post(f"{gw.admin_url}/admin/v1/users", json={"id": user_id}, headers=ADMIN)
    assert answer.status_code == 201, answer.text


def portal_link(gw: GatewayProcess, user_id: str, return_url: str | None = None) -> tuple[str, float]:
    """A link for ``user_id`` from the admin API, as the service's backend asks for one, and
    when it expires."""
    body = {} if return_url is None else {"return_url": return_url}
    answer = httpx.post(f"{gw.admin_url}/admin/v1/users/{user_id}/portal-sessions", json=body, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    document = answer.json()
    assert document["url"].startswith(portal(gw, "/start?token="))
    return document["url"], datetime.fromisoformat(document["expires_at"]).timestamp()


def open_portal(context: BrowserContext, gw: GatewayProcess, user_id: str, return_url: str | None = None) -> Page:
    """A page of ``context`` on ``user_id``'s keys, opened by a fresh link."""
    page = context.new_page()
    url, _ = portal_link(gw, user_id, return_url)
    page.goto(url)
    expect(page.get_by_role("heading", name="Your API keys", level=1)).to_be_visible()
    assert page.url == portal(gw)  # the token is no longer in the address bar
    return page


def create_key(page: Page, name: str) -> str:
    """The key the portal creates under ``name``, read from the "New key" field."""
    page.get_by_role("button", name="Create API key").click()
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create", exact=True).click()
    new_key = page.get_by_label("New key")
    expect(new_key).to_have_attribute("readonly", "")
    return new_key.input_value()


def key_row(page: Page, name: str) -> Locator:
    """The row of the key named ``name``."""
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=name, exact=True))


def key_id_of(page: Page, name: str) -> str:
    """The id of the key in the row named ``name``, from its "Revoke" form."""
    revoke = page.get_by_role("button", name="Revoke", exact=True)
    action = key_row(page, name).locator("form").filter(has=revoke).get_attribute("action")
    assert action is not None and action.startswith("/portal/keys/") and action.endswith("/revoke")
    return action.removeprefix("/portal/keys/").removesuffix("/revoke")


def public_status(gw: GatewayProcess, key: str) -> int:
    return httpx.get(f"{gw.url}/api/v1/templates", headers={"Authorization": f"Bearer {key}"}).status_code


def post_form_to(page: Page, button: str, action: str) -> Response:
    """Sends the form of ``button`` on ``page`` (its CSRF token and all) to ``action`` instead, as
    the browser sends a form: the answer to that POST."""
    submit = page.get_by_role("button", name=button, exact=True)
    submit.evaluate("(button, action) => { button.form.action = action; }", action)
    with page.expect_response(lambda answer: answer.request.method == "POST") as posted:
        submit.click()
    return posted.value


def test_a_user_creates_a_key_uses_it_and_revokes_it(gw: GatewayProcess, context: BrowserContext) -> None:
    assert gw.portal_url is not None
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gw.portal_url)
    page = open_portal(context, gw, gw.user_id)
    key = create_key(page, "ci")
    assert key.startswith("mk_live_")
    expect(page.get_by_role("dialog", name="API key created")).to_contain_text("“ci”")
    expect(page.get_by_text("it will not be shown again")).to_be_visible()
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == key
    row = key_row(page, "ci")
    expect(row).to_contain_text("active")
    screenshot(page, "portal")

    assert public_status(gw, key) == 200

    # From here on, no page shows the key again.
    seen: list[str] = []
    page.get_by_role("link", name="Done").click()
    expect(page.get_by_label("New key")).to_have_count(0)
    seen.append(page.content())
    row.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("heading", name="Revoke API key “ci”?")).to_be_visible()
    seen.append(page.content())
    page.get_by_role("button", name="Revoke key").click()
    expect(page.get_by_role("status")).to_have_text("The key was revoked.")
    expect(row).to_contain_text("revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    seen.append(page.content())
    # The user's other key is untouched.
    expect(key_row(page, "tests")).to_contain_text("active")
    assert not [html for html in seen if key in html]

    assert public_status(gw, key) == 401
    assert public_status(gw, gw.key) == 200


def test_a_user_rotates_a_key_and_goes_back_to_the_service(gw: GatewayProcess, context: BrowserContext) -> None:
    add_user(gw, "rotating-user")
    dashboard = f"{gw.url}/dashboard?tab=keys"
    page = open_portal(context, gw, "rotating-user", return_url=dashboard)
    first = create_key(page, "mobile")
    page.get_by_role("link", name="Done").click()
    expect(page.get_by_role("img", name="Requests per day of your keys", exact=False)).to_be_visible()

    # The old key stops now (the first choice): the new one works, the old one no longer.
    key_row(page, "mobile").get_by_role("button", name="Rotate").click()
    expect(page.get_by_role("dialog", name="API key rotated")).to_contain_text("has stopped working")
    second = page.get_by_label("New key").input_value()
    assert second != first and public_status(gw, second) == 200 and public_status(gw, first) == 401

    # After a grace period: both work until it ends.
    page.get_by_role("link", name="Done").click()
    active = key_row(page, "mobile").filter(has=page.get_by_role("button", name="Rotate"))
    active.get_by_role("combobox").select_option(label="old key stops in 1 hour")
    active.get_by_role("button", name="Rotate").click()
    expect(page.get_by_role("dialog", name="API key rotated")).to_contain_text("keeps working until")
    third = page.get_by_label("New key").input_value()
    assert public_status(gw, third) == 200 and public_status(gw, second) == 200

    back = page.get_by_role("link", name="Back to Mockly")
    expect(back).to_have_attribute("href", dashboard)
    back.click()
    page.wait_for_url(dashboard)


def test_another_users_key_is_neither_shown_nor_reachable(
    gw: GatewayProcess, browser: Browser, context: BrowserContext
) -> None:
    add_user(gw, "bob")
    alice = open_portal(context, gw, gw.user_id)
    alice_key_id = key_id_of(alice, "tests")
    assert alice_key_id == gw.key_id
    alice_prefix = key_row(alice, "tests").get_by_role("cell").nth(1).inner_text()
    assert gw.key.startswith(alice_prefix) and len(alice_prefix) >= 12

    with browser_context(browser) as bobs:
        bob = open_portal(bobs, gw, "bob")
        expect(bob.get_by_role("cell", name="No API keys yet.")).to_be_visible()
        create_key(bob, "bob's")
        bob.get_by_role("link", name="Done").click()
        # Bob's one key, none of Alice's.
        expect(bob.get_by_role("button", name="Revoke")).to_have_count(1)
        expect(bob.get_by_role("cell", name="tests", exact=True)).to_have_count(0)
        listing = bob.content()
        assert alice_prefix not in listing and alice_key_id not in listing and gw.user_id not in listing
        bob_key_id = key_id_of(bob, "bob's")

        # Alice's key by its id: the same "not found" page as a key that does not exist.
        unknown = bob.goto(portal(gw, "/keys/nothing-here/revoke"))
        assert unknown is not None and unknown.status == 404
        not_there = bob.get_by_role("alert").inner_text()
        answer = bob.goto(portal(gw, f"/keys/{alice_key_id}/revoke"))
        assert answer is not None and answer.status == 404
        expect(bob.get_by_role("heading", name="Not found")).to_be_visible()
        expect(bob.get_by_role("button", name="Revoke key")).to_have_count(0)
        assert bob.get_by_role("alert").inner_text().replace(alice_key_id, "nothing-here") == not_there

        # A POST to revoke it, from Bob's own page with his CSRF token: not found either.
        bob.goto(portal(gw, "/new-key"))
        assert bob.locator("input[name=csrf]").get_attribute("value")
        posted = post_form_to(bob, "Create", f"/portal/keys/{alice_key_id}/revoke")
        assert posted.status == 404
        expect(bob.get_by_role("heading", name="Not found")).to_be_visible()
        assert public_status(gw, gw.key) == 200
        # The same POST to his own key revokes it: the refusal above was about whose key it is.
        bob.goto(portal(gw, "/new-key"))
        own = post_form_to(bob, "Create", f"/portal/keys/{bob_key_id}/revoke")
        assert own.status == 303
        expect(bob.get_by_role("status")).to_have_text("The key was revoked.")

    alice.reload()
    expect(key_row(alice, "tests")).to_contain_text("active")


def test_a_link_opens_once_and_not_after_it_expires(
    gw: GatewayProcess, short_links: GatewayProcess, browser: Browser, context: BrowserContext
) -> None:
    url, _ = portal_link(gw, gw.user_id)
    page = context.new_page()
    opened = page.goto(url)
    assert opened is not None and opened.status == 200
    expect(page.get_by_role("heading", name="Your API keys", level=1)).to_be_visible()

    def refused(server: GatewayProcess, link: str) -> None:
        """``link`` of ``server`` opened in a browser that never had a session there: a page
        saying what to do, and no session."""
        with browser_context(browser) as fresh:
            again = fresh.new_page()
            answer = again.goto(link)
            assert answer is not None and answer.status == 403
            expect(again.get_by_role("heading", name="Refused")).to_be_visible()
            expect(again.get_by_role("alert")).to_contain_text(START_AGAIN)
            expect(again.get_by_role("heading", name="Your API keys")).to_have_count(0)
            assert "Traceback" not in again.content()
            # And it opened no session there.
            ended = again.goto(portal(server))
            assert ended is not None and ended.status == 401
            expect(again.get_by_role("alert")).to_contain_text(START_AGAIN)

    refused(gw, url)  # replayed

    asked = time.time()
    expired, expires_at = portal_link(short_links, short_links.user_id)
    # The link ends link_ttl after the gateway minted it, before the answer came back; expires_at
    # says when, to the second (rounded down).
    ends_by = time.time() + short_links.config.portal.link_ttl
    assert int(asked + short_links.config.portal.link_ttl) <= expires_at <= ends_by
    while (left := ends_by - time.time()) > 0:  # the clock, until the link has ended
        time.sleep(left)
    refused(short_links, expired)


def test_a_form_without_the_csrf_token_is_refused(gw: GatewayProcess, context: BrowserContext) -> None:
    add_user(gw, "carol")
    page = open_portal(context, gw, "carol")
    for token in ("remove", "guess"):
        page.get_by_role("button", name="Create API key").click()
        page.get_by_label("Name").fill(f"no-csrf-{token}")
        csrf = page.locator("input[name=csrf]")
        if token == "remove":
            csrf.evaluate("input => input.remove()")
        else:
            csrf.evaluate("input => { input.value = 'guess'; }")
        with page.expect_response(lambda answer: answer.request.method == "POST") as posted:
            page.get_by_role("button", name="Create", exact=True).click()
        assert posted.value.status == 403
        expect(page.get_by_role("heading", name="Refused")).to_be_visible()
        expect(page.get_by_role("alert")).to_contain_text("CSRF")
        expect(page.get_by_label("New key")).to_have_count(0)
        page.get_by_role("link", name="Your API keys").click()
        expect(page.get_by_role("cell", name="No API keys yet.")).to_be_visible()
    answer = httpx.get(f"{gw.admin_url}/admin/v1/keys", params={"user_id": "carol"}, headers=ADMIN)
    assert answer.status_code == 200 and answer.json()["items"] == []


def test_pages_carry_the_security_headers_and_use_nothing_from_another_host(
    gw: GatewayProcess, context: BrowserContext
) -> None:
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    url, _ = portal_link(gw, gw.user_id)
    answers = [page.goto(url)]  # the keys page the link lands on, after its redirect
    expect(page.get_by_role("heading", name="Your API keys", level=1)).to_be_visible()
    answers.append(page.goto(portal(gw, "/new-key")))
    answers.append(page.goto(portal(gw, f"/keys/{gw.key_id}/revoke")))
    expect(page.get_by_role("button", name="Revoke key")).to_be_visible()
    answers.append(page.goto(portal(gw, "/no-such-page")))
    assert [answer.status if answer else None for answer in answers] == [200, 200, 200, 404]
    for answer in answers:
        assert answer is not None
        headers = answer.headers
        policy = headers["content-security-policy"]
        assert "script-src 'self';" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "frame-ancestors 'none'" in policy and headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
    cookies = [cookie for cookie in context.cookies() if cookie["name"] == "gateway_portal"]
    assert [(c["httpOnly"], c["sameSite"], c["path"]) for c in cookies] == [(True, "Lax", "/portal/")]
    assert requested and all(url.startswith(portal(gw)) for url in requested)
    assert any(url.endswith("/portal/static/console.css") for url in requested)
    assert any(url.endswith("/portal/static/console.js") for url in requested)
