"""The operator page in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium,
no downloaded browser) against the real stack (cloud, synthetic cameras, uvicorn).

An enhancer signs in, sees the grid with live previews, opens a camera, clicks Enhance and
gets the reconstruction; a viewer is refused Enhance. Screenshots go to ``docs/img/`` when
``LAYERCAST_SAVE_SCREENSHOTS=1``, otherwise to the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.cloud.conftest import make_task_codec
from tests.cloud.web.stack import PASSWORDS, eventually, start_stack
from tests.system import require

CHROMIUM = Path("/usr/bin/chromium")
#: The stack serves HTTPS with its own private CA, which this browser does not know.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-background-networking",
    "--disable-gpu",
    "--ignore-certificate-errors",
]
DOCS_IMG = Path(__file__).resolve().parents[3] / "docs" / "img"


@pytest.fixture(autouse=True)
def needs_chromium() -> None:
    require(str(CHROMIUM), "chromium", "the operator page's browser tests")


def shipped_or_test_codec():
    """The shipped detection model when it has an enhancement layer (real-looking screenshots),
    else a small random codec built on the spot."""
    from layercast.shared.codec import load_codec
    from layercast.shared.errors import LayercastError

    for name in ("default", "det-tiny"):
        try:
            codec = load_codec(name, device="cpu")
        except (LayercastError, OSError):
            continue
        if codec.task == "detection" and codec.enhancement_model_id:
            return codec
    return make_task_codec("detection")


def _watch(page, errors: list[str]) -> None:
    """Collect script errors and console errors (CSP refusals, exceptions), not HTTP statuses."""
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )


async def _sign_in(page, base: str, user: str) -> None:
    await page.goto(base + "/")
    assert "/login" in page.url
    await page.fill("#username", user)
    await page.fill("#password", PASSWORDS[user])
    await page.click("#signin")
    await page.wait_for_url(base + "/")


async def test_operator_page_in_chromium(tmp_path):
    from playwright.async_api import TimeoutError as PlaywrightTimeoutError
    from playwright.async_api import async_playwright

    t0 = time.monotonic()
    shots = DOCS_IMG if os.environ.get("LAYERCAST_SAVE_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    stack = await start_stack(
        tmp_path / "stack",
        shipped_or_test_codec(),
        cameras={"cam-1": {}, "cam-2": {}, "cam-3": {"source.limit": 3}},
        fps=2.0,
        size=(256, 192),
    )
    feed = stack.web.app.state.web.feed
    errors: list[str] = []
    try:
        await eventually(lambda: feed.results_seen >= 3, 60, "first results")
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                # -- an enhancer: grid, live updates, enhancement ------------------------------------
                ctx = await browser.new_context(viewport={"width": 1400, "height": 860})
                page = await ctx.new_page()
                _watch(page, errors)
                await _sign_in(page, stack.url, "alice")
                tile = page.locator(".tile[data-camera='cam-1']")
                await tile.locator("img.frame:not(.hidden)").wait_for(timeout=20_000)
                first = await tile.locator(".s-seq").inner_text()
                # the preview follows the live stream (server-sent events), no reload
                await page.wait_for_function(
                    "s => document.querySelector(\".tile[data-camera='cam-1'] .s-seq\").textContent !== s",
                    arg=first,
                    timeout=20_000,
                )
                await page.wait_for_selector("#feed-status.pill-ok", timeout=10_000)
                assert await page.locator(".tile").count() == 3
                assert await page.locator(".tile[data-camera='cam-2'] .dot.online").count() == 1
                stats = await tile.locator(".s-bytes").inner_text()
                assert stats.endswith("B")  # base bytes of the shown frame
                # cam-3 had a finite source: it is shown offline
                await page.wait_for_selector(".tile[data-camera='cam-3'].offline", timeout=20_000)
                await page.screenshot(path=str(shots / "operator_grid.png"))

                # the camera's link opens its page; the DOM is enough: the elements below are each
                # waited for (a loaded CI box once took over 30 s to fire this page's load event, and
                # once saw no navigation within 60 s of the click: the click is given up to 3 tries)
                for attempt in range(3):
                    await tile.locator(".cam-name").click()
                    try:
                        await page.wait_for_url(
                            "**/cameras/cam-1", wait_until="domcontentloaded", timeout=40_000
                        )
                        break
                    except PlaywrightTimeoutError:
                        if attempt == 2:
                            raise
                await page.locator("#pv-img:not(.hidden)").wait_for(timeout=20_000)
                assert await page.locator("#timeline li").count() >= 2
                await page.locator("#timeline li").nth(1).click()  # an older frame from the timeline
                await page.wait_for_url(
                    "**/cameras/cam-1?seq=*", wait_until="domcontentloaded", timeout=60_000
                )
                seq = int(page.url.rsplit("=", 1)[1])
                await page.locator("#pv-img:not(.hidden)").wait_for(timeout=10_000)
                await page.click("#enhance")
                await page.locator("#rc-img:not(.hidden)").wait_for(timeout=30_000)
                message = await page.locator("#enhance-msg").inner_text()
                assert f"Enhanced frame #{seq}" in message
                assert (
                    "KiB" in await page.locator("#c-enh").inner_text()
                    or "B" in await page.locator("#c-enh").inner_text()
                )
                size = await page.evaluate(
                    "() => [document.querySelector('#rc-img').naturalWidth, document.querySelector('#rc-img').naturalHeight]"
                )
                assert size == [256, 192]
                await page.wait_for_timeout(300)
                await page.screenshot(path=str(shots / "operator_enhanced.png"), full_page=True)
                await ctx.close()

                # -- a viewer: sees the button, is refused ------------------------------------------
                ctx = await browser.new_context(viewport={"width": 1400, "height": 860})
                page = await ctx.new_page()
                _watch(page, errors)
                await _sign_in(page, stack.url, "bob")
                await page.goto(f"{stack.url}/cameras/cam-1?seq={seq}")
                await page.locator("#pv-img:not(.hidden)").wait_for(timeout=20_000)
                assert await page.locator("#enhance").is_visible()
                await page.click("#enhance")
                await page.wait_for_selector("#enhance-msg.notice-warn", timeout=10_000)
                refusal = await page.locator("#enhance-msg").inner_text()
                assert "Enhancement not allowed" in refusal and "viewer" in refusal
                assert await page.locator("#rc-img").is_hidden()
                await page.screenshot(path=str(tmp_path / "operator_viewer_refused.png"), full_page=True)
                await ctx.close()
            finally:
                await browser.close()
    finally:
        await stack.stop()
    audit = [
        (a["user"], a["camera_id"], a["sequence"], a["outcome"]) for a in stack.web.app.state.web.audit.read()
    ]
    assert audit == [("alice", "cam-1", seq, "ok"), ("bob", "cam-1", seq, "refused")]
    assert errors == []
    assert (shots / "operator_grid.png").stat().st_size > 10_000
    assert (shots / "operator_enhanced.png").stat().st_size > 10_000
    assert time.monotonic() - t0 < 90
    await asyncio.sleep(0)
