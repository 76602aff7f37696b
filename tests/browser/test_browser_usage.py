"""The usage view in a real browser: the org's last 30 days from
GET /api/usage, totals and one row per day, refreshed when a reply ends.

The server runs with the fake OpenAI server as its model and the fake
RocketReach API as its lead provider (tests/fakes), so the replies it runs
use tokens, cost money and spend lookup credits."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from browser_support import SERVER_ENV, dev_token, reply_done, screenshot, send
from fakes.openai_server import FakeOpenAI, FakeToolCall, TextReply, ToolCallReply
from fakes.rocketreach_server import API_KEY, FakeRocketReach
from playwright.async_api import Page, expect
from support import ServerProcess

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]
OpenApp = Callable[..., Awaitable[Page]]


@pytest_asyncio.fixture(loop_scope="session")
async def paid_server(
    tmp_path: Path,
) -> AsyncIterator[tuple[ServerProcess, FakeOpenAI, FakeRocketReach]]:
    """`leadstream serve` whose model and lead provider are the fakes."""
    model, provider = FakeOpenAI(api_key="sk-test"), FakeRocketReach()
    await model.start()
    await provider.start()
    env = {
        **SERVER_ENV,
        "LEADSTREAM_PEOPLE": "0",  # RocketReach finds the people
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": model.base_url,
        "LEADSTREAM_MODEL": "gpt-4o-mini",
        "ROCKETREACH_API_KEY": API_KEY,
        "ROCKETREACH_BASE_URL": provider.base_url,
    }
    try:
        async with ServerProcess(tmp_path / "serve", env) as server:
            yield server, model, provider
    finally:
        await provider.stop()
        await model.stop()


async def usage_of(http: aiohttp.ClientSession, server: ServerProcess, token: str) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(f"{server.url}/api/usage", headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def figure(n: int) -> str:
    return f"{n:,}"


async def test_usage_view_shows_the_org_days_and_follows_replies(
    app: OpenApp, paid_server, http: aiohttp.ClientSession, org: str
) -> None:
    server, model, provider = paid_server
    model.script(
        ToolCallReply(
            [FakeToolCall("search_leads", {"title": "CTO", "hasPhone": True, "limit": 5})]
        ),
        TextReply("Here are five CTOs with direct phone numbers."),
        TextReply("You are welcome."),
    )
    page = await app(server=server)
    await send(page, "5 CTOs with phone numbers")
    await reply_done(page)
    await expect(page.get_by_test_id("messages")).to_contain_text("five CTOs")

    usage_button = page.get_by_test_id("view-usage")
    await usage_button.click()
    await expect(usage_button).to_have_attribute("aria-pressed", "true")
    view = page.get_by_test_id("usage")
    await expect(view).to_be_visible()
    await expect(page.locator("#leads-main")).to_be_hidden()
    await expect(page.locator("#chat")).to_be_visible()  # wide screens keep the chat beside it

    # A teammate reads the same figures over REST: the org's, not the user's.
    expected = await usage_of(http, server, await dev_token(http, server.url, org, "bob"))
    totals = expected["totals"]
    assert totals["replies"] == 1 and totals["credits"] == provider.lookups_answered > 0
    assert totals["promptTokens"] == model.prompt_tokens > 0
    assert totals["completionTokens"] == model.completion_tokens > 0
    cards = page.get_by_test_id("usage-totals")
    await expect(cards.locator(".stat-value")).to_have_text(
        [
            "1",
            figure(totals["promptTokens"] + totals["completionTokens"]),
            re.compile(r"^\$0\.\d{2,4}$|^< \$0\.0001$"),
            figure(totals["credits"]),
        ]
    )
    table = page.get_by_test_id("usage-table")
    rows = table.locator("tbody tr")
    await expect(rows).to_have_count(30)
    today = table.locator(f"tbody tr[data-date='{expected['to']}']")
    await expect(rows.first).to_have_attribute("data-date", expected["to"])  # newest first
    await expect(today.locator("td")).to_have_text(
        [
            "1",
            figure(totals["promptTokens"]),
            figure(totals["completionTokens"]),
            re.compile(r"\$"),
            figure(totals["credits"]),
        ]
    )
    await expect(table.locator("tbody tr.usage-idle")).to_have_count(29)
    await expect(table.locator("tfoot td").first).to_have_text("1")
    await expect(page.locator(".usage-range")).to_contain_text("(UTC days)")
    await screenshot(page, "desktop-usage")

    # Another reply while the view is open: its row and totals follow.
    await send(page, "thanks")
    await reply_done(page)
    await expect(today.locator("td").first).to_have_text("2")
    await expect(cards.locator(".stat-value").first).to_have_text("2")
    await expect(cards.locator(".stat-value").nth(1)).to_have_text(
        figure(model.prompt_tokens + model.completion_tokens)
    )

    await usage_button.click()  # back to the leads
    await expect(view).to_be_hidden()
    await expect(page.locator("#leads-main")).to_be_visible()
    await expect(usage_button).to_have_attribute("aria-pressed", "false")


async def test_usage_view_on_a_phone_and_when_nothing_was_used(app: OpenApp) -> None:
    page = await app(width=390, height=844, is_mobile=True, has_touch=True)
    await page.get_by_test_id("view-usage").click()
    view = page.get_by_test_id("usage")
    await expect(view).to_be_visible()
    await expect(page.locator("#chat")).to_be_hidden()
    await expect(page.get_by_test_id("usage-status")).to_have_text(
        "Nothing used in the last 30 days yet."
    )
    await expect(page.get_by_test_id("usage-table").locator("tbody tr.usage-idle")).to_have_count(
        30
    )
    await expect(page.get_by_test_id("usage-totals").locator(".stat-value")).to_have_text(
        ["0", "0", "$0.00", "0"]
    )
    await screenshot(page, "mobile-usage-empty")
    await page.locator("#view-chat").click()
    await expect(view).to_be_hidden()
    await expect(page.locator("#chat")).to_be_visible()
