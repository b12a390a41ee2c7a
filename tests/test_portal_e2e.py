"""The self-service portal through a real ``gateway serve``: its own listener beside the admin
one, a link from the admin API, a key created in the portal used on the public listener, then
revoked in the portal (the next request 401)."""

from __future__ import annotations

import re

import httpx

from tests.conftest import GatewayFactory
from tests.servers import GatewayProcess, free_port


def test_a_key_created_and_revoked_in_the_portal(gateway_factory: GatewayFactory) -> None:
    portal_port = free_port()
    gw = gateway_factory({"portal": {"host": "127.0.0.1", "port": portal_port}}, admin=True)
    portal_url = f"http://127.0.0.1:{portal_port}"
    assert gw.wait_for_log(f"Uvicorn running on {portal_url} ", 20), gw.log
    auth = {"Authorization": f"Bearer {GatewayProcess.ADMIN_TOKEN}"}
    link = httpx.post(f"{gw.admin_url}/admin/v1/users/{gw.user_id}/portal-sessions", json={}, headers=auth)
    assert link.status_code == 201, link.text
    url = link.json()["url"]
    assert url.startswith(f"{portal_url}/portal/start?token=")
    # The portal is on its own listener only: the public listener's paths all belong to the upstream.
    assert "Your API keys" not in httpx.get(f"{gw.url}/portal/", headers=gw.auth).text
    with httpx.Client(base_url=portal_url, follow_redirects=True, timeout=10) as browser:
        assert browser.get(url).status_code == 200
        form = browser.get("/portal/new-key")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        created = browser.post("/portal/new-key", data={"csrf": csrf[1], "name": "e2e"})
        new_key = re.search(r'id="new-key" class="secret" type="text" value="([^"]+)"', created.text)
        assert new_key is not None
        key_auth = {"Authorization": f"Bearer {new_key[1]}"}
        assert httpx.get(f"{gw.url}/x", headers=key_auth).status_code == 200
        key_id = re.search(r'action="/portal/keys/([^/"]+)/revoke"', created.text)
        assert key_id is not None
        revoked = browser.post(f"/portal/keys/{key_id[1]}/revoke", data={"csrf": csrf[1]})
        assert revoked.status_code == 200 and "The key was revoked." in revoked.text
        assert httpx.get(f"{gw.url}/x", headers=key_auth).status_code == 401
        # The link opened once.
        assert browser.get(url).status_code == 403
    assert "Traceback" not in gw.log
