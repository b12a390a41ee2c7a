"""What the browser tests (the console's, the portal's) share: Debian's Chromium driven by
Playwright for Python, headless, a context per test, and the README's screenshots.

Playwright's sync API runs an event loop in the thread that starts it, where starting a gateway
(its store set up with ``asyncio.run``) could not run another: a module's ``browser`` fixture asks
for its gateways first, then opens ``chromium()``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.servers import REPO

CHROMIUM = "/usr/bin/chromium"
# As root, without the network: no sandbox, and none of Chromium's own calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOTS = REPO / "docs" / "screenshots"


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless (Playwright's own browser download is not used)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@contextlib.contextmanager
def browser_context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh context (its own cookies, as another browser profile), closed afterwards."""
    opened = browser.new_context(viewport={"width": 1200, "height": 900})
    opened.set_default_timeout(10_000)
    try:
        yield opened
    finally:
        opened.close()


def screenshot(page: Page, name: str) -> None:
    """``docs/screenshots/<name>.png`` of the whole page, with GATEWAY_SCREENSHOTS=1 only."""
    if os.environ.get("GATEWAY_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
