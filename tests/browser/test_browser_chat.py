"""The chat pane in a real browser: streamed search results, Stop, export and
download, the conversations list, and recovery after a dropped connection."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from browser_support import (
    CSV_COLUMNS,
    LeadsApi,
    SocketRelay,
    eventually,
    reply_done,
    screenshot,
    send,
)
from playwright.async_api import Download, Page, expect

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]
OpenApp = Callable[..., Awaitable[Page]]

# Records, on every change of the results count, the count and the results title.
WATCH_RESULTS = """() => {
  window.resultsSeen = [];
  const count = document.getElementById('results-count');
  const title = document.getElementById('results-title');
  new MutationObserver(() => window.resultsSeen.push([count.textContent, title.textContent]))
    .observe(count, {childList: true, characterData: true, subtree: true});
}"""


async def test_search_results_stream_into_the_table_and_save_all(app: OpenApp) -> None:
    page = await app()
    await page.evaluate(WATCH_RESULTS)
    await send(page, "Find 60 CTOs with phone numbers")

    results_tab = page.get_by_role("tab", name=re.compile("Search results"))
    await expect(results_tab).to_have_attribute("aria-selected", "true")
    await expect(page.get_by_test_id("results-title")).to_have_text("60 results")
    seen = await page.evaluate("window.resultsSeen")
    counts = [int(n) for n, _ in seen if n]
    assert counts == sorted(counts) and counts[-1] == 60, seen
    # Rows were on screen while the search was still running: batch by batch.
    assert any(int(n or 0) > 0 and title.startswith("Searching") for n, title in seen), seen

    table = page.get_by_test_id("results")
    await expect(table.locator(".vt-body .vt-row").first).to_be_visible()
    first_row = table.locator(".vt-body .vt-row[aria-rowindex='2']")
    await expect(first_row.locator("a[href^='tel:']")).to_have_count(1)
    await expect(
        first_row.get_by_role("link", name=re.compile("LinkedIn profile"))
    ).to_have_attribute("target", "_blank")
    await expect(first_row.locator(".vt-added")).to_have_text("Not saved")
    messages = page.get_by_test_id("messages")
    await expect(messages.locator(".lc-card").first).to_contain_text("Found 60 (60 with phone")
    await expect(messages).to_contain_text("I found 60 leads")
    await screenshot(page, "desktop-results")

    await page.get_by_test_id("save-all").click()
    await expect(messages).to_contain_text("Saved 60 new leads")
    await expect(page.locator("#saved-count")).to_have_text("60")
    await expect(page.get_by_test_id("stat-total")).to_have_text("60")
    await expect(page.locator("#results-detail")).to_contain_text("60 saved")
    await expect(first_row.locator(".vt-added")).to_contain_text("Today")


async def test_stop_button_ends_a_generating_reply(app: OpenApp) -> None:
    # The offline planner answers in milliseconds, faster than anyone can press Stop,
    # so the test plays a slow link: the reply's events are held back on their way to
    # the page. The page shows the reply as generating; Stop sends chat:stop for the
    # conversation; the server says whether it stopped anything (here: no, it had
    # already finished), and the page leaves the generating state either way.
    relay = SocketRelay()
    page = await app(before_load=relay.attach)
    relay.hold("chat:delta", "chat:tool", "chat:done", "leads:batch")
    await send(page, "Find 40 CTOs in fintech")

    stop = page.get_by_role("button", name="Stop")
    await expect(stop).to_be_visible()
    await expect(page.get_by_test_id("send")).to_be_hidden()
    busy = page.locator(".lc-assistant[aria-busy='true']")
    await expect(busy).to_have_count(1)
    await expect(busy.locator(".lc-text")).to_have_text("")  # drawn as "Thinking…"
    await eventually(lambda: "chat:done" in relay.held_names())
    await screenshot(page, "desktop-generating")

    await stop.click()
    frame = (await eventually(lambda: relay.sent_events("chat:stop")))[0]
    payload = json.loads(frame[frame.index("[") :])[1]
    conversation = await page.evaluate("sessionStorage.getItem('leadstream:conversation')")
    assert payload == {"conversationId": conversation}
    await expect(stop).to_be_hidden()
    await expect(page.get_by_test_id("send")).to_be_enabled()

    relay.release()  # the late events arrive and finish the bubble
    await expect(busy).to_have_count(0)
    await expect(page.get_by_test_id("messages")).to_contain_text("I found 40 leads")


async def test_export_to_csv_and_download(app: OpenApp, tmp_path: Path) -> None:
    page = await app()
    await send(page, "Find 30 CTOs in fintech and save them")
    await expect(page.locator("#saved-count")).to_have_text("30")
    await reply_done(page)
    await send(page, "export my saved leads to csv")

    card = page.locator(".lc-card[data-tool='export_leads']")
    await expect(card).to_contain_text("CSV ready: 30 rows")
    await screenshot(page, "desktop-export")
    async with page.expect_download() as download_info:
        await card.get_by_role("link", name="Download CSV").click()
    rows = await read_csv(await download_info.value, tmp_path / "chat.csv")
    assert ",".join(rows[0]) == CSV_COLUMNS
    assert len(rows) == 31

    # The list's own export follows its filters.
    await page.get_by_role("tab", name=re.compile("Saved leads")).click()
    await page.get_by_label("With email").check()
    with_email = int(await page.get_by_test_id("stat-email").text_content() or "0")
    await page.get_by_role("button", name="Export CSV").click()
    status = page.locator("#export-status")
    await expect(status).to_contain_text(f"CSV ready: {with_email} rows")
    async with page.expect_download() as download_info:
        await status.get_by_role("link", name="Download CSV").click()
    rows = await read_csv(await download_info.value, tmp_path / "list.csv")
    assert len(rows) == with_email + 1
    assert all(row[3] for row in rows[1:])  # every row has an email


async def read_csv(download: Download, path: Path) -> list[list[str]]:
    await download.save_as(str(path))
    text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    return list(csv.reader(io.StringIO(text)))


async def test_conversations_list_reopens_a_conversation(app: OpenApp) -> None:
    page = await app()
    await send(page, "Find 10 CTOs in fintech")
    await reply_done(page)
    await page.get_by_role("button", name="New chat").click()
    await expect(page.get_by_test_id("messages")).to_contain_text("Ask for leads in plain words")
    await send(page, "hello")
    await reply_done(page)

    await page.get_by_role("button", name="Chats").click()
    items = page.locator(".lc-history-list button")
    await expect(items).to_have_count(2)
    await expect(items.first).to_be_focused()
    await screenshot(page, "desktop-conversations")
    await items.filter(has_text="Find 10 CTOs").click()
    messages = page.get_by_test_id("messages")
    await expect(messages).to_contain_text("I found 10 leads")
    await expect(messages.locator(".lc-card")).to_contain_text("Found 10")
    await expect(messages).not_to_contain_text("offline planner")
    await expect(page.get_by_role("button", name="Chats")).to_have_attribute(
        "aria-expanded", "false"
    )

    # A reload reopens the tab's conversation.
    await page.reload()
    await expect(messages).to_contain_text("I found 10 leads")


async def test_dropped_connection_resumes_the_reply_and_resyncs_the_list(
    app: OpenApp, other_client: LeadsApi
) -> None:
    relay = SocketRelay()
    page = await app(before_load=relay.attach)
    await expect(page.get_by_text("No saved leads yet")).to_be_visible()
    # The reply's events never reach the page: the link drops first.
    relay.hold("chat:delta", "chat:tool", "chat:done", "leads:batch")
    await send(page, "Find 20 CTOs in fintech")
    await eventually(lambda: "chat:done" in relay.held_names())
    relay.blocked = True
    await relay.drop()

    conn = page.get_by_test_id("conn")
    await expect(conn).to_have_text("Reconnecting…")
    await expect(page.get_by_role("alert")).to_contain_text("Connection lost")
    await expect(page.get_by_test_id("send")).to_be_hidden()  # still generating
    await other_client.create(
        name="Offline Olga", company="Gapless GmbH", emails=["olga@gap.example"]
    )
    await screenshot(page, "desktop-reconnecting")

    relay.hold()
    relay.blocked = False
    await expect(conn).to_have_text("Connected", timeout=20_000)
    messages = page.get_by_test_id("messages")
    await expect(messages).to_contain_text("I found 20 leads")  # chat:resume
    await expect(messages.locator(".lc-card")).to_contain_text("Found 20")  # steps from REST
    await reply_done(page)
    await expect(page.get_by_test_id("leads")).to_contain_text("Offline Olga")  # since=version
    await expect(page.get_by_test_id("stat-total")).to_have_text("1")
