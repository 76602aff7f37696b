"""The page at phone width (390x844): the chat fills the screen, the lead table
becomes cards whose phone and email are tap targets."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import pytest
from browser_support import PHONE, reply_done, screenshot, send
from playwright.async_api import Locator, Page, expect

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]
OpenApp = Callable[..., Awaitable[Page]]
TAP_TARGET_PX = 44


async def box(locator: Locator) -> dict[str, float]:
    bounds = await locator.bounding_box()
    assert bounds is not None
    return bounds


async def no_sideways_scroll(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width


async def test_phone_layout_chat_fills_the_screen_and_leads_are_cards(app: OpenApp) -> None:
    page = await app(**PHONE)
    chat = page.get_by_role("region", name="Chat with the assistant")
    bounds = await box(chat)
    assert bounds["width"] == PHONE["width"]
    assert bounds["y"] + bounds["height"] >= PHONE["height"] - 1
    assert bounds["height"] > PHONE["height"] * 0.85
    await expect(page.get_by_role("main")).to_be_hidden()
    await no_sideways_scroll(page)
    await screenshot(page, "mobile-chat-empty")

    await send(page, "Find 12 CTOs in fintech with phone numbers")
    await reply_done(page)
    await screenshot(page, "mobile-chat-reply")
    await page.get_by_role("button", name="Show results").click()
    await expect(page.get_by_role("main")).to_be_visible()
    await expect(chat).to_be_hidden()
    await expect(page.get_by_role("tab", name=re.compile("Search results"))).to_have_attribute(
        "aria-selected", "true"
    )
    await expect(page.get_by_test_id("results-title")).to_have_text("12 results")
    card = page.get_by_test_id("results").locator(".vt-body .vt-row[aria-rowindex='2']")
    call = card.locator("a[href^='tel:']")
    await expect(call).to_be_visible()
    assert (await box(call))["height"] >= TAP_TARGET_PX
    await expect(card.get_by_role("columnheader")).to_have_count(0)
    await no_sideways_scroll(page)
    await screenshot(page, "mobile-results")

    await page.get_by_test_id("save-all").click()
    await expect(page.locator("#saved-count")).to_have_text("12")
    await page.get_by_role("tab", name=re.compile("Saved leads")).click()
    saved = page.get_by_test_id("leads").locator(".vt-body .vt-row[aria-rowindex='2']")
    email = saved.locator("a[href^='mailto:']")
    call = saved.locator("a[href^='tel:']")
    await expect(call).to_be_visible()
    assert (await box(call))["height"] >= TAP_TARGET_PX
    if await email.count():
        assert (await box(email))["height"] >= TAP_TARGET_PX
    await no_sideways_scroll(page)
    await screenshot(page, "mobile-saved")

    await page.get_by_role("button", name="Chat", exact=True).click()
    await expect(chat).to_be_visible()
    await expect(page.get_by_test_id("messages")).to_contain_text("Saved 12 new leads")
