"""The portal's pages beyond create and revoke (issue 16, step 2), in process: rotation with the
grace periods the operator allows, the limits on keys, each key's age and the "rotate it" mark
(in the console too), usage per day, the "Back to" link, and the title, colour, logo and wording."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.accounting.metrics import Metrics
from gateway.config import ConfigError, load_config
from gateway.manage.portal import mint_link
from tests.portal_support import TOKEN, keys_shown, open_setup
from tests.test_console import Browser as ConsoleBrowser

DAY = 86400.0
NEW_KEY = re.compile(r'id="new-key" class="secret" type="text" value="([^"]+)" readonly')


def _new_key(html: str) -> str:
    found = NEW_KEY.search(html)
    assert found is not None, html
    return found[1]


async def test_rotate_now_or_after_a_grace_period_offered(tmp_path: Path) -> None:
    async with open_setup(tmp_path, portal={"rotation_graces": ["1h", "1d"]}) as setup:
        browser = await setup.browser("alice")
        first = await setup.service.find_key(_new_key((await browser.post("/portal/new-key", {"name": "ci"})).text))
        listing = await browser.client.get("/portal/")
        assert ">Rotate</button>" in listing.text
        assert [*re.findall(r'<option value="(\d+)">([^<]+)</option>', listing.text)] == [
            ("0", "old key stops now"),
            ("3600", "old key stops in 1 hour"),
            ("86400", "old key stops in 1 day"),
        ]
        # Now: the old key stops at once, the new one is shown once, with the same name.
        rotated = await browser.post(f"/portal/keys/{first.id}/rotate", {"grace": "0"})
        assert (
            rotated.status_code == 200 and "API key rotated" in rotated.text and "has stopped working" in rotated.text
        )
        second = await setup.service.find_key(_new_key(rotated.text))
        assert second.name == "ci" and second.user_id == "alice"
        assert (await setup.service.get_key(first.id)).status(setup.service.now()) == "revoked"
        # After an hour: the old key works until then.
        rotated = await browser.post(f"/portal/keys/{second.id}/rotate", {"grace": "3600"})
        third = await setup.service.find_key(_new_key(rotated.text))
        old = await setup.service.get_key(second.id)
        assert old.status(setup.service.now()) == "active" and old.expires_at == pytest.approx(setup.clock.now + 3600)
        assert "keeps working until" in rotated.text
        # A key in its grace period offers no second rotation; a grace not offered is refused.
        listing = await browser.client.get("/portal/")
        assert listing.text.count(">Rotate</button>") == 1
        refused = await browser.post(f"/portal/keys/{third.id}/rotate", {"grace": str(7 * 86400)})
        assert refused.status_code == 422 and "grace periods offered" in refused.text
        events, _ = await setup.service.audit_events(action="key.rotate")
        assert {(e.actor, e.target) for e in events} == {("portal:alice", first.id), ("portal:alice", second.id)}


async def test_no_grace_periods_means_the_old_key_stops_now(tmp_path: Path) -> None:
    async with open_setup(tmp_path, portal={"rotation_graces": []}) as setup:
        browser = await setup.browser("alice")
        key = await setup.service.find_key(_new_key((await browser.post("/portal/new-key", {"name": "ci"})).text))
        listing = await browser.client.get("/portal/")
        assert "<select" not in listing.text and ">Rotate</button>" in listing.text
        assert (await browser.post(f"/portal/keys/{key.id}/rotate", {"grace": "3600"})).status_code == 422
        assert (await browser.post(f"/portal/keys/{key.id}/rotate")).status_code == 200
        assert (await setup.service.get_key(key.id)).status(setup.service.now()) == "revoked"


async def test_another_users_key_cannot_be_rotated(tmp_path: Path) -> None:
    async with open_setup(tmp_path) as setup:
        alice_key = await setup.service.create_key("alice", name="a")
        bob = await setup.browser("bob")
        answer = await bob.post(f"/portal/keys/{alice_key.record.id}/rotate", {"grace": "0"})
        assert answer.status_code == 404
        assert (await setup.service.get_key(alice_key.record.id)).replaced_by is None
        assert await setup.service.list_keys("bob") == []


async def test_at_most_max_active_keys_per_user_even_when_asked_at_once(tmp_path: Path) -> None:
    async with open_setup(tmp_path, portal={"max_active_keys_per_user": 2}) as setup:
        browser = await setup.browser("alice")
        made = await asyncio.gather(*(browser.post("/portal/new-key", {"name": f"k{n}"}) for n in range(6)))
        assert sorted(answer.status_code for answer in made) == [200, 200, 409, 409, 409, 409]
        refused = next(answer for answer in made if answer.status_code == 409)
        assert "2 active keys, the most allowed: revoke one to create another" in refused.text
        keys = await setup.service.list_keys("alice")
        assert len(keys) == 2
        # Revoking one makes room for another; the limit is the portal's, not the admin API's.
        await browser.post(f"/portal/keys/{keys[0].id}/revoke")
        assert (await browser.post("/portal/new-key", {"name": "again"})).status_code == 200
        await setup.service.create_key("alice", name="by the operator")
        assert (
            len([k for k in await setup.service.list_keys("alice") if k.status(setup.service.now()) == "active"]) == 3
        )


async def test_a_grace_period_lets_keys_overlap_by_one_and_no_more(tmp_path: Path) -> None:
    async with open_setup(tmp_path, portal={"max_active_keys_per_user": 2}) as setup:
        browser = await setup.browser("alice")
        one = await setup.service.find_key(_new_key((await browser.post("/portal/new-key", {"name": "one"})).text))
        two = await setup.service.find_key(_new_key((await browser.post("/portal/new-key", {"name": "two"})).text))
        week = str(7 * 86400)
        rotated = await browser.post(f"/portal/keys/{two.id}/rotate", {"grace": week})
        assert rotated.status_code == 200  # three active until the week ends
        three = await setup.service.find_key(_new_key(rotated.text))
        # No chain of graces: over the limit, a grace is refused and nothing changes.
        for key_id in (one.id, three.id):
            refused = await browser.post(f"/portal/keys/{key_id}/rotate", {"grace": week})
            assert refused.status_code == 409 and "rotate this key with the old one stopping now" in refused.text
            assert (await setup.service.get_key(key_id)).replaced_by is None
        # Now is always possible: it adds no active key.
        assert (await browser.post(f"/portal/keys/{three.id}/rotate", {"grace": "0"})).status_code == 200
        active = [k for k in await setup.service.list_keys("alice") if k.status(setup.service.now()) == "active"]
        assert len(active) == 3
        # Once the grace has ended, two again.
        setup.clock.now += 7 * 86400 + 1
        active = [k for k in await setup.service.list_keys("alice") if k.status(setup.service.now()) == "active"]
        assert len(active) == 2


async def test_an_attempt_the_service_refuses_is_not_counted_against_the_session(tmp_path: Path) -> None:
    async with open_setup(tmp_path, portal={"max_active_keys_per_user": 1, "max_keys_per_session": 2}) as setup:
        browser = await setup.browser("alice")
        made = await browser.post("/portal/new-key", {"name": "one"})
        for _ in range(3):
            assert (await browser.post("/portal/new-key", {"name": "refused"})).status_code == 409
        key = await setup.service.find_key(_new_key(made.text))
        await browser.post(f"/portal/keys/{key.id}/revoke")
        assert (await browser.post("/portal/new-key", {"name": "two"})).status_code == 200
        assert (await browser.post("/portal/new-key", {"name": "three"})).status_code == 429


async def test_a_session_makes_at_most_max_keys_per_session(tmp_path: Path) -> None:
    async with open_setup(tmp_path, portal={"max_keys_per_session": 2}) as setup:
        browser = await setup.browser("alice")
        first = await browser.post("/portal/new-key", {"name": "one"})
        key = await setup.service.find_key(_new_key(first.text))
        assert (await browser.post(f"/portal/keys/{key.id}/rotate", {"grace": "0"})).status_code == 200
        refused = await browser.post("/portal/new-key", {"name": "three"})
        assert refused.status_code == 429 and "the most one session may" in refused.text
        assert len(await setup.service.list_keys("alice")) == 2
        # A new link from the service: a new session, which may make keys again.
        again = await setup.browser("alice")
        assert (await again.post("/portal/new-key", {"name": "three"})).status_code == 200


async def test_each_key_shows_its_age_and_an_old_one_is_marked_in_the_portal_and_the_console(tmp_path: Path) -> None:
    async with open_setup(tmp_path) as setup:
        setup.clock.now = time.time() - 91 * DAY
        old = await setup.service.create_key("alice", name="old")
        setup.clock.now = time.time() - 3 * DAY
        young = await setup.service.create_key("alice", name="young")
        setup.clock.now = time.time()
        browser = await setup.browser("alice")
        listing = (await browser.client.get("/portal/")).text
        rows = {name: row for name, row in re.findall(r"<td>(old|young)</td>(.*?)</tr>", listing, re.S)}
        assert "91 days" in rows["old"] and "Older than 90 days: rotate it" in rows["old"]
        assert "3 days" in rows["young"] and "rotate it" not in rows["young"]
        # Rotated, the new key is young and the old one (now revoked) carries no mark.
        await browser.post(f"/portal/keys/{old.record.id}/rotate", {"grace": "0"})
        assert "rotate it" not in (await browser.client.get("/portal/")).text
        # The console marks the same keys (its own clock: the real one).
        await setup.service.create_key("bob", name="bob's")
        setup.clock.now = time.time() - 100 * DAY
        stale = await setup.service.create_key("bob", name="stale")
        console = ConsoleBrowser(setup.admin, Metrics())
        assert (await console.sign_in(TOKEN)).status_code == 303
        user_page = (await console.get("/console/users/bob")).text
        assert user_page.count("Older than 90 days: rotate it") == 1
        key_page = (await console.get(f"/console/keys/{stale.record.id}")).text
        assert "(100 days)" in key_page and "Older than 90 days: rotate it" in key_page
        assert young.record.prefix in keys_shown(listing)


async def test_usage_per_day_is_a_chart_with_its_numbers(tmp_path: Path) -> None:
    async with open_setup(tmp_path) as setup:
        browser = await setup.browser("alice")
        page = (await browser.client.get("/portal/")).text
        assert '<svg class="chart"' in page and 'role="img"' in page
        assert "Requests per day of your keys" in page and "The numbers, day by day" in page


async def test_back_to_the_service_only_with_a_return_url(tmp_path: Path) -> None:
    async with open_setup(tmp_path) as setup:
        with_return = await setup.browser("alice", return_url="https://dash.example.com/account?tab=keys&x=1")
        page = (await with_return.client.get("/portal/")).text
        assert '<a class="back" href="https://dash.example.com/account?tab=keys&amp;x=1">Back to Mockly</a>' in page
        # On every page of the session.
        assert "Back to Mockly" in (await with_return.client.get("/portal/new-key")).text
        without = await setup.browser("alice")
        assert "Back to" not in (await without.client.get("/portal/")).text


async def test_title_colour_logo_and_the_wording_of_the_error_profile(tmp_path: Path) -> None:
    logo = tmp_path / "logo.svg"
    logo.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    portal = {"title": "Panda keys", "accent_color": "#AA3366", "logo": str(logo), "service_name": "Panda Studio"}
    async with open_setup(tmp_path, portal=portal, errors={"profile": "mockupanda"}) as setup:
        browser = await setup.browser("alice", return_url="https://dash.example.com/")
        page = (await browser.client.get("/portal/")).text
        assert "<title>Your API Keys · Panda keys</title>" in page and '<span class="brand">Panda keys</span>' in page
        assert "Back to Panda Studio" in page and '<img class="logo" src="/portal/logo"' in page
        theme = await browser.client.get("/portal/theme.css")
        assert theme.headers["content-type"].startswith("text/css") and "--accent: #aa3366;" in theme.text
        served = await browser.client.get("/portal/logo")
        assert served.content == logo.read_bytes() and served.headers["content-type"].startswith("image/svg+xml")
        # An SVG opened by itself runs no script: the portal's policy covers it.
        assert "script-src 'self'" in served.headers["content-security-policy"]
    (tmp_path / "plain").mkdir()
    async with open_setup(tmp_path / "plain") as setup:
        browser = await setup.browser("alice")
        page = (await browser.client.get("/portal/")).text
        assert "<title>Your API keys · Mockly API keys</title>" in page and "theme.css" not in page
        assert (await browser.client.get("/portal/logo")).status_code == 404


async def test_the_portal_serves_active_users_only(tmp_path: Path) -> None:
    async with open_setup(tmp_path) as setup:
        alice = await setup.browser("alice")
        assert (await alice.client.get("/portal/")).status_code == 200
        unused = (await setup.link("alice")).json()["url"]
        await setup.service.retire_user("alice")  # "deleted": every key revoked, inactive
        closed = await alice.client.get("/portal/")
        assert closed.status_code == 403 and "closed to this account" in closed.text
        assert (await alice.client.get("/portal/")).status_code == 401  # and the session ended
        # A link made before opens nothing now, and none is made.
        assert (await (await setup.browser()).open(unused)).status_code == 403
        refused = await setup.link("alice")
        assert refused.status_code == 409 and "inactive" in refused.json()["error"]["message"]
        assert await setup.service.list_keys("alice") == []


async def test_a_link_of_another_account_says_so_on_every_page_and_every_page_names_the_account(
    tmp_path: Path,
) -> None:
    async with open_setup(tmp_path) as setup:
        browser = await setup.browser("alice")
        page = (await browser.client.get("/portal/new-key")).text
        assert "Account <strong>alice</strong>" in page and "in place of" not in page
        # Someone else's link opened in this browser (pushed by a page of theirs, say).
        await browser.open((await mint_link(setup.service, setup.config.portal, "bob", None))[0])
        warning = (
            "A link opened this portal for account <strong>bob</strong>, in place of account <strong>alice</strong>"
        )
        for path in ("/portal/", "/portal/new-key", "/portal/?done=revoked"):
            page = (await browser.client.get(path)).text
            assert warning in page and "Account <strong>bob</strong>" in page
        # A second link of the same account does not clear it (whoever pushed one can push two).
        await browser.open((await mint_link(setup.service, setup.config.portal, "bob", None))[0])
        assert warning in (await browser.client.get("/portal/")).text
        # Signed out, then a link: nothing to warn about.
        await browser.post("/portal/sign-out")
        await browser.open((await mint_link(setup.service, setup.config.portal, "bob", None))[0])
        assert "in place of" not in (await browser.client.get("/portal/")).text


async def test_a_session_ends_when_the_subscription_changes_even_back_to_active(tmp_path: Path) -> None:
    async with open_setup(tmp_path) as setup:
        browser = await setup.browser("alice")
        setup.clock.now += 1  # the admin's change comes after the session opened
        await setup.service.retire_user("alice")
        await setup.service.set_subscription("alice", "active")
        ended = await browser.post("/portal/new-key", {"name": "after"})
        assert ended.status_code == 401 and "the account changed" in ended.text
        assert await setup.service.list_keys("alice") == []
        assert (await browser.client.get("/portal/")).status_code == 401
        # A new link opens a new session, for the active user.
        assert (await (await setup.browser("alice")).client.get("/portal/")).status_code == 200


async def test_sign_out_ends_the_session(tmp_path: Path) -> None:
    async with open_setup(tmp_path) as setup:
        browser = await setup.browser("alice")
        assert ">Sign out</button>" in (await browser.client.get("/portal/")).text
        page = (await browser.client.get("/portal/new-key")).text
        assert page.count('name="csrf"') == 1  # the page's own form's: signing out needs none
        other_site = await browser.client.post("/portal/sign-out", headers={"sec-fetch-site": "cross-site"})
        assert other_site.status_code == 403 and (await browser.client.get("/portal/")).status_code == 200
        left = await browser.post("/portal/sign-out", csrf=False)
        assert left.status_code == 200 and "You have left the portal" in left.text
        assert "gateway_portal=" in left.headers["set-cookie"] and "Max-Age=0" in left.headers["set-cookie"]
        assert (await browser.client.get("/portal/")).status_code == 401


async def test_a_key_made_as_the_user_is_deleted_is_refused_or_revoked(tmp_path: Path) -> None:
    async with open_setup(tmp_path) as setup:
        browser = await setup.browser("alice")
        key = await setup.service.find_key(_new_key((await browser.post("/portal/new-key", {"name": "a"})).text))
        answers = await asyncio.gather(
            *(browser.post("/portal/new-key", {"name": f"k{n}"}) for n in range(5)),
            browser.post(f"/portal/keys/{key.id}/rotate", {"grace": "3600"}),
        )
        await setup.service.retire_user("alice")
        answers += await asyncio.gather(
            *(browser.post("/portal/new-key", {"name": f"late{n}"}) for n in range(3)),
        )
        assert {a.status_code for a in answers} <= {200, 401, 403}
        await setup.service.set_subscription("alice", "active")
        now = setup.service.now()
        assert [k.id for k in await setup.service.list_keys("alice") if k.status(now) == "active"] == []


@pytest.mark.parametrize(
    "bad",
    [
        "https://dash.example.com/\u0000",
        "https://dash.example.com/a b",
        "https://dash.example.com/\n",
        "https://@dash.example.com/",
        "https://dash.example.com:0/",
        "https://dash.example.com:99999999/",
    ],
)
async def test_a_return_url_with_control_characters_or_spaces_is_refused(tmp_path: Path, bad: str) -> None:
    async with open_setup(tmp_path) as setup:
        answer = await setup.link("alice", return_url=bad.encode().decode("unicode_escape"))
        assert answer.status_code == 422 and answer.json()["error"]["field"] == "return_url"


@pytest.mark.parametrize(
    ("portal", "message"),
    [
        ({"logo": "/nonexistent/logo.png"}, "portal.logo: cannot read /nonexistent/logo.png"),
        ({"logo": "logo.exe"}, "portal.logo: expected the path of an image file"),
        ({"accent_color": "red"}, "portal.accent_color: expected a colour as #rrggbb"),
        ({"rotation_graces": ["1h", "soon"]}, "portal.rotation_graces: expected a list of durations"),
        ({"rotation_graces": ["500ms"]}, "portal.rotation_graces: expected a list of durations of whole seconds"),
        ({"rotation_graces": ["1.5s"]}, "portal.rotation_graces: expected a list of durations of whole seconds"),
        ({"max_active_keys_per_user": 0}, "portal.max_active_keys_per_user: expected a whole number of at least 1"),
        ({"title": "x" * 81}, "portal.title: expected a line of text of at most 80 characters"),
    ],
)
def test_a_bad_portal_setting_names_the_file_and_the_key(
    tmp_path: Path, portal: dict[str, object], message: str
) -> None:
    file = tmp_path / "gateway.yaml"
    file.write_text(yaml.safe_dump({"portal": portal}))
    with pytest.raises(ConfigError, match=re.escape(f"{file}: {message}")):
        load_config(file, environ={})


def test_a_logo_too_large_is_refused(tmp_path: Path) -> None:
    logo = tmp_path / "logo.png"
    logo.write_bytes(b"\0" * (512 * 1024 + 1))
    file = tmp_path / "gateway.yaml"
    file.write_text(f"portal:\n  logo: {logo}\n")
    with pytest.raises(ConfigError, match="portal.logo: .* is 524,289 bytes; at most 524,288"):
        load_config(file, environ={})


@pytest.mark.parametrize(
    ("public_url", "secure"),
    [("HTTPS://keys.example.com", True), ("https://keys.example.com", True), ("http://keys.example.com", False)],
)
def test_the_cookie_is_secure_by_default_behind_an_https_public_url(
    tmp_path: Path, public_url: str, secure: bool
) -> None:
    file = tmp_path / "gateway.yaml"
    file.write_text(yaml.safe_dump({"portal": {"port": 8082, "public_url": public_url}}))
    assert load_config(file, environ={}).portal.cookies_secure() is secure
    file.write_text(yaml.safe_dump({"portal": {"port": 8082, "public_url": public_url, "secure_cookies": False}}))
    assert load_config(file, environ={}).portal.cookies_secure() is False


@pytest.mark.parametrize("path", ["/portal%2Fstart", "/portal%2fstart", "/%70ortal/start"])
async def test_a_link_opens_only_under_the_literal_prefix_its_cookie_goes_with(tmp_path: Path, path: str) -> None:
    async with open_setup(tmp_path) as setup:
        url, _ = await mint_link(setup.service, setup.config.portal, "alice", None)
        token = urlsplit(url).query
        browser = await setup.browser()
        elsewhere = await browser.client.get(f"{path}?{token}")
        assert elsewhere.status_code == 404 and "set-cookie" not in elsewhere.headers
        assert "frame-ancestors" in elsewhere.headers["content-security-policy"]
        # The link was not used up there.
        assert (await browser.client.get(f"/portal/start?{token}")).status_code == 303


@pytest.mark.parametrize("path", ["/portal/x%0ay", "/x%0ay", "/portal/keys/%0d%0a/revoke"])
async def test_a_path_no_route_can_match_is_a_404_with_the_headers(tmp_path: Path, path: str) -> None:
    async with open_setup(tmp_path) as setup:
        answer = await (await setup.browser("alice")).client.get(path)
        assert answer.status_code == 404 and answer.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors" in answer.headers["content-security-policy"]


async def test_a_link_made_before_the_user_was_deleted_opens_nothing_after(tmp_path: Path) -> None:
    async with open_setup(tmp_path) as setup:
        url, _ = await mint_link(setup.service, setup.config.portal, "alice", None)
        await setup.service.retire_user("alice")
        await setup.service.set_subscription("alice", "active")
        assert (await (await setup.browser()).open(url)).status_code == 403
