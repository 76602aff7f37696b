"""The lead table in a real browser: sorts, filters, server-side search, live
changes from another client, and 20,000 rows loaded by cursor and virtualized."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from browser_support import SERVER_ENV, LeadsApi, dev_token, row_names, screenshot, settles
from playwright.async_api import Page, expect
from support import ServerProcess

from leadstream.store.records import LeadInput
from leadstream.store.sqlite import SqliteStore

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]
OpenApp = Callable[..., Awaitable[Page]]

# Created in this order (oldest first).
PEOPLE = [
    {"name": "Carol Zeta", "company": "Beta Corp", "title": "CFO", "phones": ["+1 212 555 0101"]},
    {
        "name": "alice Young",
        "company": "delta ltd",
        "title": "CTO",
        "emails": ["alice@delta.example"],
    },
    {
        "name": "Bob Xu",
        "company": "Alpha Inc",
        "title": "VP Sales",
        "emails": ["bob@alpha.example"],
        "phones": ["+44 20 7946 0102"],
        "linkedin": "https://www.linkedin.com/in/bob-xu",
    },
    {"name": "Dave Walker", "company": "Charlie GmbH", "title": "Head of Ops"},
    {
        "name": "Eve Vance",
        "company": "Echo",
        "title": "CEO",
        "emails": ["eve@echo.example"],
        "phones": ["+49 30 1234 5678"],
    },
]


async def count_rows(page: Page) -> int:
    return len(await row_names(page, "leads"))


async def last_row_name(page: Page) -> str:
    names = await row_names(page, "leads")
    return names[-1] if names else ""


async def create_people(client: LeadsApi) -> None:
    for person in PEOPLE:
        await client.create(**person)
        await asyncio.sleep(0.003)  # distinct createdAt milliseconds


async def test_sort_filter_and_search(app: OpenApp, other_client: LeadsApi) -> None:
    await create_people(other_client)
    page = await app()
    names = lambda: row_names(page, "leads")  # noqa: E731
    await expect(page.get_by_test_id("saved-foot")).to_have_text("All 5 leads shown.")
    assert await names() == ["Eve Vance", "Dave Walker", "Bob Xu", "alice Young", "Carol Zeta"]
    await expect(page.get_by_test_id("stat-total")).to_have_text("5")
    await expect(page.get_by_test_id("stat-email")).to_have_text("3")
    await expect(page.locator("#stat-email-note")).to_have_text("60% coverage")
    await expect(page.get_by_test_id("stat-phone")).to_have_text("3")
    await expect(page.get_by_test_id("stat-both")).to_have_text("2")
    await expect(page.locator("#stat-both-note")).to_have_text("40% coverage")

    bob = page.get_by_test_id("leads").locator(".vt-row", has_text="Bob Xu")
    await expect(bob.locator("a[href='tel:+442079460102']")).to_have_text(re.compile("20 7946"))
    await expect(bob.locator("a[href='mailto:bob@alpha.example']")).to_be_visible()
    await expect(
        bob.get_by_role("link", name=re.compile("LinkedIn profile of Bob Xu"))
    ).to_have_attribute("href", "https://www.linkedin.com/in/bob-xu")
    await expect(bob.locator(".vt-company")).to_have_text("Alpha IncVP Sales")  # title beneath
    await screenshot(page, "desktop-saved")

    sort = page.get_by_label("Sort")
    expected = {
        "createdAt:asc": ["Carol Zeta", "alice Young", "Bob Xu", "Dave Walker", "Eve Vance"],
        "name:asc": ["alice Young", "Bob Xu", "Carol Zeta", "Dave Walker", "Eve Vance"],
        "company:asc": ["Bob Xu", "Carol Zeta", "Dave Walker", "alice Young", "Eve Vance"],
    }
    for value, order in expected.items():
        async with page.expect_request(lambda r, v=value: f"sort={v.replace(':', '%3A')}" in r.url):
            await sort.select_option(value)
        await settles(names, order)

    # Column headers sort too, and say how.
    await page.get_by_role("columnheader", name="Added").get_by_role("button").click()
    await expect(sort).to_have_value("createdAt:desc")
    await expect(page.get_by_role("columnheader", name="Added")).to_have_attribute(
        "aria-sort", "descending"
    )
    await page.get_by_role("columnheader", name="Name").get_by_role("button").click()
    await expect(sort).to_have_value("name:asc")

    await page.get_by_label("With phone").check()
    await settles(names, ["Bob Xu", "Carol Zeta", "Eve Vance"])
    await page.get_by_label("With email").check()
    await settles(names, ["Bob Xu", "Eve Vance"])
    await page.get_by_label("With phone").uncheck()
    await page.get_by_label("With email").uncheck()
    await settles(lambda: count_rows(page), 5)

    search = page.get_by_label("Search saved leads")
    async with page.expect_request(lambda r: "q=walker" in r.url):
        await search.press_sequentially("walker", delay=20)  # one request after the pause
    await settles(names, ["Dave Walker"])
    await search.fill("nobody-at-all")
    await expect(page.get_by_text("No leads match")).to_be_visible()
    await page.get_by_role("button", name="Clear search and filters").click()
    await settles(lambda: count_rows(page), 5)
    await expect(search).to_have_value("")

    # The lists are tabs: arrow keys move between them.
    await page.get_by_role("tab", name=re.compile("Saved leads")).focus()
    await page.keyboard.press("ArrowRight")
    results_tab = page.get_by_role("tab", name=re.compile("Search results"))
    await expect(results_tab).to_be_focused()
    await expect(results_tab).to_have_attribute("aria-selected", "true")
    await expect(page.get_by_role("tabpanel", name=re.compile("Search results"))).to_be_visible()
    await expect(page.get_by_text("No search results yet")).to_be_visible()


async def test_changes_from_another_client_appear_live(
    app: OpenApp, other_client: LeadsApi
) -> None:
    page = await app()
    table = page.get_by_test_id("leads")
    await expect(page.get_by_text("No saved leads yet")).to_be_visible()

    lara = await other_client.create(
        name="Lara Live", company="First Co", emails=["lara@first.example"]
    )
    row = table.locator(".vt-row", has_text="Lara Live")
    await expect(row).to_be_visible()
    await expect(row).to_have_class(re.compile("vt-flash"))  # highlighted briefly
    await expect(page.get_by_test_id("stat-total")).to_have_text("1")
    await expect(page.get_by_test_id("stat-email")).to_have_text("1")
    await expect(page.locator("#saved-count")).to_have_text("1")

    await other_client.call(
        "PATCH", f"/api/leads/{lara['id']}", {"company": "Second Co", "phones": ["+1 415 555 0100"]}
    )
    await expect(row.locator(".vt-company")).to_contain_text("Second Co")
    await expect(row.locator("a[href^='tel:']")).to_be_visible()
    await expect(page.get_by_test_id("stat-both")).to_have_text("1")

    await other_client.create(name="Zed Newest", company="Third Co")
    await settles(lambda: row_names(page, "leads"), ["Zed Newest", "Lara Live"])

    # Under the name sort a new lead lands in its place, not on top.
    await page.get_by_label("Sort").select_option("name:asc")
    await settles(lambda: row_names(page, "leads"), ["Lara Live", "Zed Newest"])
    await other_client.create(name="Mia Middle", company="Fourth Co")
    await settles(lambda: row_names(page, "leads"), ["Lara Live", "Mia Middle", "Zed Newest"])
    # A filter keeps out a live lead that does not match it.
    await page.get_by_label("With email").check()
    await settles(lambda: row_names(page, "leads"), ["Lara Live"])
    await other_client.create(name="Nico Nomail", company="Fifth Co")
    await other_client.create(name="Olga Email", company="Sixth Co", emails=["olga@six.example"])
    await settles(lambda: row_names(page, "leads"), ["Lara Live", "Olga Email"])

    await other_client.call("DELETE", f"/api/leads/{lara['id']}")
    await settles(lambda: row_names(page, "leads"), ["Olga Email"])
    await expect(page.get_by_test_id("stat-total")).to_have_text("4")


async def seed_leads(db: Path, org: str, count: int) -> None:
    """`count` saved leads in `org`, written to the database before the server starts."""
    store = SqliteStore(db)
    await store.open()
    try:
        for start in range(0, count, 1000):
            await store.upsert_leads(
                org,
                [
                    LeadInput(
                        source="test",
                        person_id=f"p{i:05d}",
                        name=f"Person {i:05d}",
                        title="Engineer",
                        company=f"Company {i % 97}",
                        emails=(f"p{i}@example.test",) if i % 2 else (),
                        phones=(f"+1 555 01{i % 100:02d}",) if i % 3 else (),
                    )
                    for i in range(start, min(start + 1000, count))
                ],
            )
    finally:
        await store.close()


# Scrolls the table from top to bottom in 120 animation frames; returns frame times (ms).
SCROLL_THROUGH = """async table => {
  const times = [];
  let last = performance.now();
  for (let step = 1; step <= 120; step += 1) {
    table.scrollTop = (table.scrollHeight - table.clientHeight) * step / 120;
    await new Promise(requestAnimationFrame);
    const now = performance.now();
    times.push(now - last);
    last = now;
  }
  return times;
}"""


async def test_twenty_thousand_rows_load_by_cursor_and_scroll(
    app: OpenApp, org: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    db = tmp_path / "data" / "leadstream.db"
    db.parent.mkdir(parents=True)
    await seed_leads(db, org, 20_000)
    env = {**SERVER_ENV, "LEADSTREAM_PEOPLE": "0", "LEADSTREAM_STORE": f"sqlite:///{db}"}
    async with ServerProcess(tmp_path, env) as server:
        page = await app(server=server)
        table = page.get_by_test_id("leads")
        foot = page.get_by_test_id("saved-foot")
        await expect(page.get_by_test_id("stat-total")).to_have_text("20,000")
        await expect(foot).to_contain_text("more load as you scroll")

        started = time.perf_counter()
        # Scrolling to the end pulls the next cursor page, until there is none.
        # (100 pages of 200: REST rate limits may make some of them wait their turn.)
        for _ in range(2000):
            if await foot.text_content() == "All 20,000 leads shown.":
                break
            await table.evaluate("t => { t.scrollTop = t.scrollHeight; }")
            await page.wait_for_timeout(40)
        await expect(foot).to_have_text("All 20,000 leads shown.")
        print(f"20,000 rows loaded by scrolling in {time.perf_counter() - started:.1f} s")
        assert await table.get_attribute("aria-rowcount") == "20001"
        oldest = await LeadsApi(http, server.url, await dev_token(http, server.url, org, "x")).call(
            "GET", "/api/leads?sort=createdAt:asc&limit=1"
        )
        await table.evaluate("t => { t.scrollTop = t.scrollHeight; }")
        await settles(lambda: last_row_name(page), oldest["leads"][0]["name"])

        rows_in_dom = await table.locator(".vt-body .vt-row").count()
        assert rows_in_dom <= 60, rows_in_dom  # virtualized: a screenful, not 20,000
        times = sorted(await table.evaluate(SCROLL_THROUGH))
        median, p95 = times[len(times) // 2], times[int(len(times) * 0.95)]
        print(f"scroll frames over 20,000 rows: median {median:.1f} ms, p95 {p95:.1f} ms")
        assert median < 50, times
        assert await table.locator(".vt-body .vt-row").count() <= 60
        await screenshot(page, "desktop-20000-rows")
