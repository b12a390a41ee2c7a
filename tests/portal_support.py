"""What the in-process portal tests share: the admin and portal apps on one real SQLite store, a
fake clock, and a browser without JavaScript (httpx through ASGITransport) that follows a link
and posts forms with the session's CSRF token."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from gateway.accounting.metrics import Metrics
from gateway.admin.api import create_admin_app
from gateway.config import GatewayConfig, load_config
from gateway.manage.portal import mint_link
from gateway.manage.service import ManagementService
from gateway.portal.app import create_portal_app
from gateway.store import open_store
from tests.inprocess import Lifespan

TOKEN = "portal-admin-token-0123456789"
FRAMERS = "https://dash.example.com"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    config: GatewayConfig
    admin: httpx.AsyncClient
    portal_app: Any
    service: ManagementService
    clock: Clock

    async def link(self, user_id: str, **body: Any) -> httpx.Response:
        return await self.admin.post(
            f"/admin/v1/users/{user_id}/portal-sessions", json=body, headers={"authorization": f"Bearer {TOKEN}"}
        )

    async def browser(self, user_id: str | None = None, return_url: str | None = None) -> Browser:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.portal_app), base_url="http://portal.test")
        browser = Browser(client)
        if user_id is not None:
            # Minted on the fake clock (the admin app's is the real one).
            url, _ = await mint_link(self.service, self.config.portal, user_id, return_url)
            opened = await browser.open(url)
            assert opened.status_code == 200, opened.text
        return browser


class Browser:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.csrf = ""

    async def open(self, url: str) -> httpx.Response:
        parts = urlsplit(url)
        answer = await self.client.get(f"{parts.path}?{parts.query}")
        if answer.status_code == 303:
            answer = await self.client.get(answer.headers["location"])
            found = re.search(r'name="csrf" value="([^"]+)"', (await self.client.get("/portal/new-key")).text)
            self.csrf = found[1] if found else ""
        return answer

    async def post(self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True) -> httpx.Response:
        return await self.client.post(path, data=({"csrf": self.csrf} if csrf else {}) | (data or {}))


@contextlib.asynccontextmanager
async def open_setup(tmp_path: Path, **sections: dict[str, Any]) -> AsyncIterator[Setup]:
    """The admin app and the portal app on one SQLite store, users alice and bob; ``sections``
    (``portal={...}``, ``errors={...}``) added to the config."""
    portal = {
        "port": 8082,
        "public_url": "https://keys.example.com",
        "return_url_hosts": ["dash.example.com"],
        "frame_ancestors": FRAMERS,
        # The links say https (TLS in front); the test's browser comes over plain HTTP.
        "secure_cookies": False,
    }
    settings: dict[str, Any] = {"store": {"url": f"sqlite:///{tmp_path}/gateway.db"}, **sections}
    settings["portal"] = portal | sections.get("portal", {})
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(settings))
    config = load_config(tmp_path / "gateway.yaml", environ={"GATEWAY_ADMIN_TOKEN": TOKEN})
    clock = Clock()
    store = await open_store(config.store.url)
    service = ManagementService(store, key_prefix=config.keys.prefix, clock=clock)
    for user in ("alice", "bob"):
        await service.add_user(user)
    admin_app = create_admin_app(config, Metrics())
    portal_app = create_portal_app(config, service=service, clock=clock)
    lifespans = [Lifespan(admin_app), Lifespan(portal_app)]
    for lifespan in lifespans:
        await lifespan.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=admin_app), base_url="http://admin.test") as admin:
        yield Setup(config, admin, portal_app, service, clock)
    for lifespan in lifespans:
        await lifespan.stop()
    await store.close()


def keys_shown(html: str) -> list[str]:
    return re.findall(r"<td><code>([^<]+)</code></td>", html)
