"""The embeddable widget on a page of another origin: one script tag, a chat
bubble in a Shadow DOM, Socket.IO and REST across origins (LEADSTREAM_CORS_ORIGINS),
and a host page whose own styles and globals stay as they were."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from browser_support import SERVER_ENV, dev_token, reply_done, screenshot, send
from playwright.async_api import Page, expect
from support import ServerProcess, free_port

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]

# A host page that is hard on embedded things: global styles with !important, an
# `io` global of its own and an AMD loader (which the Socket.IO bundle would use).
HOST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Host shop</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  * {{ font-family: Georgia, serif !important; color: rgb(120, 0, 0) !important; }}
  button {{ background: rgb(255, 0, 0) !important; border-radius: 0 !important; }}
  div, p {{ border: 2px solid rgb(0, 160, 0); }}
</style>
<script>
  window.io = "host-io";
  window.amdCalls = 0;
  window.define = function () {{ window.amdCalls += 1; }};
  window.define.amd = {{}};
</script>
</head><body>
<h1>Host shop</h1><p id="host-text">Our own content.</p>
<button id="host-button" type="button">Host button</button>
<script src="{server}/static/widget.js" data-token="{token}" data-title="Ask Leadstream" async></script>
</body></html>"""


@dataclass
class Embed:
    server: ServerProcess
    host_url: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def embed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Embed]:
    """A host site on one port, and a Leadstream server that allows its origin."""
    port = free_port()
    host_origin = f"http://127.0.0.1:{port}"
    env = {**SERVER_ENV, "LEADSTREAM_CORS_ORIGINS": host_origin}
    async with ServerProcess(tmp_path_factory.mktemp("embed"), env) as server:
        tokens: dict[str, str] = {}

        async def host_page(request: web.Request) -> web.Response:
            org = request.query["org"]
            if org not in tokens:
                async with aiohttp.ClientSession() as http:
                    tokens[org] = await dev_token(http, server.url, org, "visitor")
            body = HOST_PAGE.format(server=server.url, token=html.escape(tokens[org]))
            return web.Response(text=body, content_type="text/html")

        app = web.Application()
        app.router.add_get("/", host_page)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield Embed(server, host_origin)
        finally:
            await runner.cleanup()


async def open_host(
    new_page: Callable[..., Awaitable[Page]], embed: Embed, org: str, **size: int
) -> Page:
    page = await new_page(**size)
    await page.goto(f"{embed.host_url}/?org={org}")
    return page


async def test_widget_chats_from_another_origin_without_touching_the_host(
    new_page: Callable[..., Awaitable[Page]], embed: Embed, org: str, tmp_path: Path
) -> None:
    page = await open_host(new_page, embed, org)
    bubble = page.get_by_role("button", name="Open the Ask Leadstream chat")
    await expect(bubble).to_be_visible()
    await expect(bubble).to_have_css("background-color", "rgb(31, 95, 191)")
    await expect(bubble).to_have_css("border-radius", "50%")
    await screenshot(page, "embed-closed")

    await bubble.click()
    dialog = page.get_by_role("dialog", name="Ask Leadstream chat")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_test_id("conn")).to_have_text("Connected")
    await expect(page.get_by_label("Message the assistant")).to_be_focused()
    await send(page, "Find 20 CTOs in fintech with phone numbers")
    await expect(dialog).to_contain_text("I found 20 leads")
    await expect(dialog.locator(".lc-card")).to_contain_text("Found 20")
    await expect(dialog.locator(".lc-text").first).to_have_css("color", "rgb(255, 255, 255)")
    await reply_done(page)
    await dialog.get_by_role("button", name="Save all").click()
    await expect(dialog).to_contain_text("Saved 20 new leads")
    await reply_done(page)
    await send(page, "export to csv")
    link = dialog.get_by_role("link", name="Download CSV")
    await expect(link).to_have_attribute(
        "href", re.compile(re.escape(embed.server.url) + "/api/exports/")
    )
    async with page.expect_download() as download_info:
        await link.click()
    path = tmp_path / "widget.csv"
    await (await download_info.value).save_as(str(path))
    assert len(path.read_text(encoding="utf-8").splitlines()) == 21
    await screenshot(page, "embed-open")

    # The host page is as it was: its globals, its styles, no styles of ours in it.
    assert await page.evaluate("window.io") == "host-io"
    assert await page.evaluate("window.amdCalls") == 0
    await expect(page.locator("#host-button")).to_have_css("background-color", "rgb(255, 0, 0)")
    await expect(page.locator("#host-text")).to_have_css("font-family", "Georgia, serif")
    assert (
        await page.evaluate("document.querySelectorAll('style, link[rel=stylesheet]').length") == 1
    )

    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(bubble).to_be_focused()


async def test_widget_reopens_its_conversation_after_the_host_page_navigates(
    new_page: Callable[..., Awaitable[Page]], embed: Embed, org: str
) -> None:
    # Needs REST CORS: the widget reads the conversation with GET /api/conversations/...
    page = await open_host(new_page, embed, org)
    await page.get_by_role("button", name="Open the Ask Leadstream chat").click()
    await send(page, "Find 5 CTOs in fintech")
    dialog = page.get_by_role("dialog", name="Ask Leadstream chat")
    await expect(dialog).to_contain_text("I found 5 leads")
    await reply_done(page)

    await page.reload()
    await expect(dialog).to_be_visible()  # it was open: it opens again
    await expect(dialog).to_contain_text("I found 5 leads")
    await expect(dialog.locator(".lc-user")).to_contain_text("Find 5 CTOs in fintech")
    await dialog.get_by_role("button", name="Chats").click()
    await expect(dialog.locator(".lc-history-list button")).to_have_count(1)


async def test_widget_fills_a_phone_screen(
    new_page: Callable[..., Awaitable[Page]], embed: Embed, org: str
) -> None:
    page = await open_host(new_page, embed, org, width=390, height=844)
    await page.get_by_role("button", name="Open the Ask Leadstream chat").click()
    dialog = page.get_by_role("dialog", name="Ask Leadstream chat")
    await expect(dialog.get_by_test_id("conn")).to_have_text("Connected")
    bounds = await dialog.bounding_box()
    assert bounds == {"x": 0, "y": 0, "width": 390, "height": 844}
    await screenshot(page, "embed-mobile")
    await dialog.get_by_role("button", name="Close").click()
    await expect(dialog).to_be_hidden()


async def test_the_servers_own_page_still_connects_when_cors_origins_are_set(
    new_page: Callable[..., Awaitable[Page]], embed: Embed
) -> None:
    # LEADSTREAM_CORS_ORIGINS adds origins; the server's own must stay allowed.
    page = await new_page()
    await page.goto(embed.server.url + "/")
    await expect(page.get_by_test_id("conn")).to_have_text("Connected")
