"""A real headless Chromium (Debian's) driven by Playwright, for tests of the pages.

Chromium is started with its background networking off: this machine's network is closed, and the
tests run in a private network namespace anyway.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip
WAIT_MS = 15_000


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium; fails (never skips) when the Debian package is missing."""
    if shutil.which(CHROMIUM) is None:
        raise AssertionError(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def sign_in(page: Page, base: str, username: str, password: str) -> None:
    """Open the site, get sent to the sign-in page, sign in, land on the recordings search."""
    await page.goto(base + "/")
    await page.wait_for_url("**/ui/login.html?next=*")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#sign-in")
    await page.wait_for_url("**/ui/recordings.html")
