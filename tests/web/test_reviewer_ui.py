"""The reviewer UI in a real headless Chromium against a real server (uvicorn on 127.0.0.1, SQLite,
a recording sealed into real storage): sign in, search, open the player, see the waveform and the
integrity badge, play, pause; the play is in the audit log with its time range. The pages run under
the strict Content-Security-Policy the server sends, so a violation would show up here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import ConsoleMessage, Page, Response, expect
from prometheus_client import CollectorRegistry

from helpline.events import EventBus
from helpline.store import Store, upgrade
from helpline.web import create_app
from helpline.web.auth import hash_password
from tests.support.browser import WAIT_MS, chromium, sign_in
from tests.web.http_support import serve
from tests.web.recording_fixture import make_archive

PASSWORD = "correct horse battery"
CALLER = "+15551230077"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite:///{tmp_path / 'helpline.db'}"
    await upgrade(url)
    store = Store(url)
    try:
        yield store
    finally:
        await store.close()


async def canvas_ink(page: Page) -> list[int]:
    """Pixels per lane (top half, bottom half) that are not the canvas background."""
    result: list[int] = await page.evaluate(
        """() => {
            const c = document.getElementById("waveform");
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            const lanes = [0, 0];
            for (let i = 0; i < d.length; i += 4) {
                const bg = d[i] === 0xf8 && d[i + 1] === 0xfa && d[i + 2] === 0xfc;
                const grey = d[i] === 0xcb && d[i + 1] === 0xd5 && d[i + 2] === 0xe1;
                if (!bg && !grey) lanes[Math.floor(i / 4 / c.width) < c.height / 2 ? 0 : 1]++;
            }
            return lanes;
        }"""
    )
    return result


async def test_a_compliance_reviewer_signs_in_searches_plays_and_the_play_is_audited(
    store: Store, tmp_path: Path
) -> None:
    await store.users.create("carol", "compliance", await hash_password(PASSWORD))
    archive = make_archive(tmp_path, store)
    row, _wav = await archive.seal(seconds=60, caller=CALLER)
    await archive.seal(seconds=5, caller="+15550000000")  # not to be found by the search
    app = create_app(store, EventBus(), CollectorRegistry(), recordings=archive.library())
    problems: list[str] = []

    failed_requests: list[tuple[int, str]] = []

    def on_console(message: ConsoleMessage) -> None:
        # Failed requests are checked one by one below, from the responses themselves.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    def on_response(response: Response) -> None:
        if response.status >= 400:
            failed_requests.append((response.status, urlsplit(response.url).path))

    async with serve(app) as base:
        async with chromium() as browser:
            page = await browser.new_page()
            page.set_default_timeout(WAIT_MS)
            page.on("console", on_console)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("response", on_response)

            # Not signed in: the search page sends us to sign in, then back.
            await sign_in(page, base, "carol", PASSWORD)

            await page.fill("input[name=caller]", CALLER)
            await page.click("#search")
            rows = page.locator("#results tbody tr")
            await expect(rows).to_have_count(1)
            await expect(rows.first).to_have_attribute("data-id", row.id)
            await rows.first.locator("a.open").click()
            await page.wait_for_url(f"**/ui/recordings/{row.id}")

            await expect(page.locator("#waveform")).to_have_attribute("data-drawn", "true")
            caller_ink, agent_ink = await canvas_ink(page)
            assert caller_ink > 1000 and agent_ink > 1000, (caller_ink, agent_ink)
            await expect(page.locator("#integrity")).to_have_text("verified")
            await expect(page.locator("#integrity")).to_have_attribute("data-status", "verified")
            await expect(page.locator("#overlay-list")).to_contain_text("PCI pause 00:42\u201300:50")
            await expect(page.locator("#overlay-list")).to_contain_text("Hold 00:20\u201300:25")
            await expect(page.locator(".overlay-pause.span")).to_have_count(1)
            await expect(page.locator(".lane")).to_have_count(2)

            await page.select_option("#speed", "1.5")
            await page.click("#play")
            await page.wait_for_function(
                "() => document.getElementById('audio').currentTime > 1", timeout=WAIT_MS
            )
            rate, pitch = await page.evaluate(
                "() => [document.getElementById('audio').playbackRate,"
                " document.getElementById('audio').preservesPitch]"
            )
            assert (rate, pitch) == (1.5, True)
            await page.click(".lane[data-lane='1'] .mute")
            await expect(page.locator(".lane[data-lane='1']")).to_have_class("lane silent")
            await page.click("#play")
            await page.wait_for_function("() => document.getElementById('audio').paused", timeout=WAIT_MS)
            stopped_at = await page.evaluate("() => document.getElementById('audio').currentTime")
            assert stopped_at > 1

            # The keyboard: → skips 5 s forward inside the ticket's range.
            await page.locator("body").press("ArrowRight")
            await page.wait_for_function(
                f"() => document.getElementById('audio').currentTime >= {stopped_at + 4.9}", timeout=WAIT_MS
            )

        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            r = await http.post("/api/session", json={"username": "carol", "password": PASSWORD})
            assert r.status_code == 200
            r = await http.get("/api/audit", params={"action": "play"})
            assert r.status_code == 200, r.text
            plays = r.json()["items"]
    assert len(plays) == 1
    assert plays[0]["actor"] == "carol" and plays[0]["target_id"] == row.id
    assert plays[0]["detail"] == {"start": 0, "end": 60}
    assert problems == [], "\n".join(problems)
    assert failed_requests == [(401, "/api/recordings")]  # only the search before signing in
