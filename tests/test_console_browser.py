"""The operator console in a real headless Chromium (Debian's, driven by Playwright), against a
real gateway with its admin listener and the upstream stub, as an operator uses it.

Controls are found by their accessible names (README, "The console"): what a screen reader says
is what the tests click. With GATEWAY_SCREENSHOTS=1 the tests also write the README's screenshots
to docs/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser import browser_context, chromium, screenshot
from tests.conftest import GatewayFactory
from tests.servers import GatewayProcess

OPS_TOKEN = "ops-console-token-0123456789abcdef"


@pytest.fixture(scope="module")
def browser(gw: GatewayProcess, short_lived: GatewayProcess) -> Iterator[Browser]:
    """Started after the gateways (tests/browser.py says why)."""
    with chromium() as launched:
        yield launched


def _gateway(factory: GatewayFactory, folder: Path, console: dict[str, object] | None = None) -> GatewayProcess:
    (folder / "ops-token").write_text(OPS_TOKEN)
    settings: dict[str, object] = {"admin": {"tokens": [{"name": "ops", "token_file": str(folder / "ops-token")}]}}
    if console:
        settings["console"] = console
    return factory(settings, admin=True)


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> GatewayProcess:
    return _gateway(gateway_factory, tmp_path_factory.mktemp("console"))


@pytest.fixture(scope="module")
def short_lived(gateway_factory: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> GatewayProcess:
    """A gateway whose console sessions last 3 s."""
    return _gateway(gateway_factory, tmp_path_factory.mktemp("short"), {"session_lifetime": "3s"})


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    with browser_context(browser) as opened:
        yield opened


def console(gw: GatewayProcess, path: str = "/") -> str:
    assert gw.admin_url is not None
    return f"{gw.admin_url}/console{path}"


def sign_in(page: Page, gw: GatewayProcess, token: str = OPS_TOKEN) -> None:
    page.goto(console(gw))
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def test_an_operator_issues_a_key_and_revokes_it(gw: GatewayProcess, context: BrowserContext) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gw.admin_url)
    page = context.new_page()
    sign_in(page, gw)
    page.get_by_role("link", name="Users").click()
    page.get_by_label("User id").fill("acme")
    page.get_by_label("Subscription").select_option("active")
    page.get_by_role("button", name="Add user").click()
    expect(page.get_by_role("heading", name="User acme")).to_be_visible()

    page.get_by_role("button", name="Create key").click()
    page.get_by_label("Name").fill("ci pipeline")
    page.get_by_label("Expires in").fill("30d")
    page.get_by_label("Rate limits").fill("100/minute")
    page.get_by_role("button", name="Create", exact=True).click()
    new_key = page.get_by_label("New key")
    expect(new_key).to_have_attribute("readonly", "")
    key = new_key.input_value()
    assert key.startswith("mk_live_")
    expect(page.get_by_text("it will not be shown again")).to_be_visible()
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == key
    screenshot(page, "key-created")

    assert httpx.get(f"{gw.url}/api/v1/templates", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    httpx.get(f"{gw.url}/api/v1/templates", headers={"Authorization": "Bearer mk_live_wrong"})

    # From here on, no page shows the key again.
    seen: list[str] = []
    page.goto(console(gw, "/users/acme"))
    row = page.get_by_role("row").filter(has_text="ci pipeline")
    expect(row.get_by_role("button", name="Rotate")).to_be_visible()
    seen.append(page.content())
    row.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("heading", name=re.compile("Revoke key"))).to_be_visible()
    seen.append(page.content())
    page.get_by_role("button", name="Revoke key").click()
    expect(page.get_by_role("row").filter(has_text="ci pipeline")).to_contain_text("revoked")
    seen.append(page.content())
    assert httpx.get(f"{gw.url}/api/v1/templates", headers={"Authorization": f"Bearer {key}"}).status_code == 401

    page.get_by_role("row").filter(has_text="ci pipeline").get_by_role("link", name="ci pipeline").click()
    expect(page.get_by_label("Rate limits")).to_have_value("100/minute")
    page.get_by_label("Rate limits").fill("50/minute; 1000/day")
    page.get_by_role("button", name="Save limits").click()
    expect(page.get_by_label("Rate limits")).to_have_value("50/minute; 1000/day")
    seen.append(page.content())

    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    # The changes made here, by the token's name (the fixture's own key was made outside any).
    for action in ("key.create", "key.revoke"):
        events = page.get_by_role("row").filter(has=page.get_by_role("cell", name=action, exact=True))
        expect(events.filter(has_text="ops (console)")).to_have_count(1)
    seen.append(page.content())

    page.get_by_role("link", name="Users").click()
    page.get_by_label("Search users").fill("ac")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name="acme")).to_be_visible()
    seen.append(page.content())
    page.get_by_role("link", name="acme").click()
    expect(page.get_by_role("heading", name="User acme")).to_be_visible()
    seen.append(page.content())
    screenshot(page, "user")

    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("cell", name="forwarded", exact=True)).to_be_visible()
    seen.append(page.content())
    screenshot(page, "overview")
    assert not [html for html in seen if key in html]


def test_pages_carry_the_security_headers_and_a_post_needs_the_csrf_token(
    gw: GatewayProcess, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in(page, gw)
    for path in ("/", "/users", "/audit", "/sign-in"):
        response = page.goto(console(gw, path))
        assert response is not None and response.status == 200
        headers = response.headers
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
    # The browser's own cookie, without the form's token: refused, with a page saying why.
    refused = context.request.post(console(gw, "/users"), form={"user_id": "mallory", "subscription": "active"})
    assert refused.status == 403 and "CSRF" in refused.text()
    wrong = context.request.post(console(gw, "/users"), form={"user_id": "mallory", "csrf": "guess"})
    assert wrong.status == 403
    page.goto(console(gw, "/users"))
    expect(page.get_by_role("link", name="mallory")).to_have_count(0)


def test_an_anonymous_visitor_gets_the_sign_in_form(gw: GatewayProcess, context: BrowserContext) -> None:
    page = context.new_page()
    for path in ("/", "/users", "/users/acme", "/audit"):
        page.goto(console(gw, path))
        expect(page.get_by_label("Admin token")).to_be_visible()
        expect(page.get_by_role("link", name="Users")).to_have_count(0)
    page.get_by_label("Admin token").fill("not-the-token-0123456789")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not an admin token")


def test_signing_out_ends_the_session(gw: GatewayProcess, browser: Browser, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, gw)
    cookies = context.cookies()
    assert [c["name"] for c in cookies if c["name"] == "gateway_console" and c["httpOnly"]] == ["gateway_console"]
    assert {c["sameSite"] for c in cookies if c["name"] == "gateway_console"} == {"Strict"}
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Admin token")).to_be_visible()
    # The old cookie, replayed by another browser, opens nothing.
    other = browser.new_context()
    try:
        session = next(c for c in cookies if c["name"] == "gateway_console")
        other.add_cookies([{"name": session["name"], "value": session["value"], "url": console(gw)}])
        replayed = other.new_page()
        replayed.goto(console(gw, "/users"))
        expect(replayed.get_by_label("Admin token")).to_be_visible()
    finally:
        other.close()


def test_an_expired_session_gets_the_sign_in_form(short_lived: GatewayProcess, context: BrowserContext) -> None:
    short = short_lived
    page = context.new_page()
    sign_in(page, short)
    page.get_by_role("link", name="Users").click()
    expect(page.get_by_label("Search users")).to_be_visible()
    # The session ends 3 s after signing in, busy or not; a page left open then reloads itself
    # and lands on the sign-in form, which is the event waited for.
    expect(page.get_by_label("Admin token")).to_be_visible(timeout=15_000)
    assert "/console/sign-in?next=%2Fconsole%2Fusers" in page.url
    page.goto(console(short, "/users"))  # and the session is gone on the server, not only on the page
    expect(page.get_by_label("Admin token")).to_be_visible()


def test_the_console_uses_nothing_from_another_host(gw: GatewayProcess, context: BrowserContext) -> None:
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    sign_in(page, gw)
    page.goto(console(gw, "/users"))
    assert requested and all(url.startswith(f"{gw.admin_url}/console") for url in requested)
    assert any(url.endswith("/static/console.css") for url in requested)
