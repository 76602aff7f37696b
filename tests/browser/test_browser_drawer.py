"""The lead drawer in a real browser, two tabs of one org side by side: one edits a
lead, the other sees it live in its saved list, its search results and its own open
drawer (told that someone else changed it); server validation messages beside the
form; delete with undo, and a delete that other tabs see live."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from browser_support import (
    PHONE,
    LeadsApi,
    SocketRelay,
    reply_done,
    row_names,
    screenshot,
    send,
    settles,
)
from playwright.async_api import Locator, Page, Route, expect

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]
OpenApp = Callable[..., Awaitable[Page]]
CONFLICT = "Changed by someone else — showing the current version"


def saved_row(page: Page, name: str) -> Locator:
    return page.get_by_test_id("leads").locator(".vt-body .vt-row", has_text=name)


def drawer(page: Page) -> Locator:
    return page.get_by_role("dialog")


def field(page: Page, label: str) -> Locator:
    return drawer(page).get_by_label(label, exact=True)


async def open_saved(page: Page, name: str) -> Locator:
    """Opens the drawer of a saved lead by its row's name button; returns the button."""
    opener = saved_row(page, name).get_by_role("button", name=name)
    await opener.click()
    await expect(field(page, "Name")).to_have_value(name)
    return opener


async def lead_status(http: aiohttp.ClientSession, api: LeadsApi, lead_id: str) -> int:
    async with http.get(f"{api.base}/api/leads/{lead_id}", headers=api.headers) as response:
        return response.status


async def test_an_edit_shows_live_in_the_other_tab_with_a_conflict_notice(
    app: OpenApp, other_client: LeadsApi
) -> None:
    editor = await app()
    watcher = await app()
    # The watcher searches and saves: its results rows are saved leads from then on.
    await send(watcher, "Find 5 CTOs in fintech with phone numbers")
    await reply_done(watcher)
    await watcher.get_by_role("button", name="Show results").click()
    await expect(watcher.get_by_test_id("results-title")).to_have_text("5 results")
    await watcher.get_by_test_id("save-all").click()
    await expect(watcher.locator("#saved-count")).to_have_text("5")
    results = watcher.get_by_test_id("results")
    await expect(results.locator(".vt-open")).to_have_count(5)  # every row is saved now
    name = (await row_names(watcher, "results"))[0]
    leads = (await other_client.call("GET", "/api/leads?limit=10"))["leads"]
    lead = next(item for item in leads if item["name"] == name)

    # Both tabs open the same lead: the editor from its saved list, the watcher from
    # its search results; the watcher starts an edit of its own and leaves it unsaved.
    await expect(editor.locator("#saved-count")).to_have_text("5")
    await open_saved(editor, name)
    await results.get_by_role("button", name=name).click()
    await expect(field(watcher, "Name")).to_have_value(name)
    await expect(field(watcher, "Title")).to_have_value(lead["title"])
    await field(watcher, "Title").fill("Chief Tinkerer")
    await screenshot(editor, "drawer-open")

    await field(editor, "Name").fill("Renamed Person")
    await field(editor, "Tags, separated by commas").fill("hot, q4")
    await field(editor, "Notes").fill("Met at the fintech summit")
    await editor.get_by_test_id("drawer-save").click()
    await expect(drawer(editor).get_by_role("status").first).to_have_text("Saved.")

    # The watcher sees it everywhere, without a reload: results row, open drawer.
    await expect(results.locator(".vt-body .vt-row", has_text="Renamed Person")).to_be_visible()
    await expect(field(watcher, "Name")).to_have_value("Renamed Person")
    notice = drawer(watcher).get_by_role("alert").filter(has_text=CONFLICT)
    await expect(notice).to_be_visible()
    await expect(field(watcher, "Title")).to_have_value(lead["title"])  # the current version
    await expect(field(watcher, "Tags, separated by commas")).to_have_value("hot, q4")
    await screenshot(watcher, "drawer-conflict")
    # The editor's own write is no conflict: its list shows it, its drawer says nothing.
    await settles(lambda: row_names(editor, "leads"), await _names_with(editor, "Renamed Person"))
    await expect(drawer(editor).get_by_role("alert").filter(has_text=CONFLICT)).to_be_hidden()

    # The watcher takes its edit back and saves: the later write wins, and the editor is told.
    await notice.get_by_role("button", name="Put my edits back").click()
    await expect(field(watcher, "Title")).to_have_value("Chief Tinkerer")
    await watcher.get_by_test_id("drawer-save").click()
    await expect(drawer(watcher).get_by_role("status").first).to_have_text("Saved.")
    await expect(drawer(editor).get_by_role("alert").filter(has_text=CONFLICT)).to_be_visible()
    await expect(field(editor, "Title")).to_have_value("Chief Tinkerer")
    stored = await other_client.call("GET", f"/api/leads/{lead['id']}")
    assert (stored["name"], stored["title"], stored["tags"], stored["notes"]) == (
        "Renamed Person",
        "Chief Tinkerer",
        ["hot", "q4"],
        "Met at the fintech summit",
    )
    await expect(saved_row(editor, "Renamed Person").locator(".vt-company")).to_contain_text(
        "Chief Tinkerer"
    )

    # Bad input: the server's messages stand beside the fields; nothing is saved.
    await field(editor, "Emails, one per line").fill("ok@example.com\nnot-an-email")
    await field(editor, "Name").fill("")
    await editor.get_by_test_id("drawer-save").click()
    email_error = drawer(editor).locator("#drawer-e-emails")
    await expect(email_error).to_have_text(re.compile(r"Item 2: .*not an email address"))
    await expect(drawer(editor).locator("#drawer-e-name")).to_contain_text("at least 1 character")
    await expect(field(editor, "Emails, one per line")).to_have_attribute("aria-invalid", "true")
    await expect(drawer(editor).get_by_role("alert").filter(has_text="Not saved")).to_be_visible()
    await screenshot(editor, "drawer-validation")
    assert (await other_client.call("GET", f"/api/leads/{lead['id']}"))["emails"] == stored[
        "emails"
    ]

    # Escape closes; focus goes back to the row it was opened from.
    await editor.keyboard.press("Escape")
    await expect(drawer(editor)).to_be_hidden()
    row = editor.get_by_test_id("leads").locator(f".vt-row[data-key='{lead['id']}']")
    await expect(row.get_by_role("button", name="Renamed Person")).to_be_focused()

    # A teammate deletes another of the results: its row is the found person again, not saved.
    other = next(item for item in leads if item["id"] != lead["id"])
    await other_client.call("DELETE", f"/api/leads/{other['id']}")
    other_row = results.locator(".vt-body .vt-row", has_text=other["name"])
    await expect(other_row.locator(".vt-added")).to_have_text("Not saved")
    await expect(other_row.locator(".vt-open")).to_have_count(0)
    await expect(watcher.get_by_test_id("results-title")).to_have_text("5 results")

    # The watcher's saved list shows the lead as it is now, too.
    await watcher.keyboard.press("Escape")
    await watcher.get_by_role("tab", name=re.compile("Saved leads")).click()
    await expect(saved_row(watcher, "Renamed Person").locator(".vt-company")).to_contain_text(
        "Chief Tinkerer"
    )


async def _names_with(page: Page, name: str) -> list[str]:
    """The saved list's names once `name` is among them (order as the page sorts)."""
    await expect(page.get_by_test_id("leads").get_by_text(name, exact=True)).to_be_visible()
    return await row_names(page, "leads")


async def test_delete_with_undo_and_a_delete_seen_live_elsewhere(
    app: OpenApp, other_client: LeadsApi, http: aiohttp.ClientSession
) -> None:
    kept = await other_client.create(name="Kept Kim", company="Undo Co")
    gone = await other_client.create(name="Gone Gus", company="Delete Co")
    deleter = await app()
    watcher = await app()
    await expect(saved_row(watcher, "Gone Gus")).to_be_visible()

    # Delete, then Undo within the grace period: the lead stays.
    await open_saved(deleter, "Kept Kim")
    await drawer(deleter).get_by_test_id("drawer-delete").click()
    await expect(drawer(deleter)).to_be_hidden()
    undo = deleter.get_by_test_id("undo-delete")
    await expect(undo).to_be_focused()
    await expect(saved_row(deleter, "Kept Kim")).to_have_attribute("data-state", "deleting")
    await screenshot(deleter, "drawer-delete-undo")
    await undo.click()
    await expect(deleter.get_by_text("Kept “Kept Kim”.")).to_be_visible()
    await expect(saved_row(deleter, "Kept Kim")).not_to_have_attribute("data-state", "deleting")

    # A delete left to run: the watcher, with that lead's drawer open, sees it go live.
    await open_saved(watcher, "Gone Gus")
    await open_saved(deleter, "Gone Gus")
    await drawer(deleter).get_by_test_id("drawer-delete").click()
    await expect(saved_row(watcher, "Gone Gus")).to_have_count(0)
    gone_notice = drawer(watcher).get_by_role("alert").filter(has_text="deleted by someone else")
    await expect(gone_notice).to_be_visible()
    await expect(field(watcher, "Name")).to_be_disabled()
    await expect(watcher.get_by_test_id("drawer-save")).to_be_disabled()
    await screenshot(watcher, "drawer-deleted-elsewhere")
    await expect(deleter.get_by_text("Deleted “Gone Gus”.")).to_be_visible()
    assert await lead_status(http, other_client, gone["id"]) == 404
    # Kim's delete was scheduled before Gus's: had Undo not stopped it, it would be gone by now.
    assert await lead_status(http, other_client, kept["id"]) == 200
    await expect(saved_row(watcher, "Kept Kim")).to_be_visible()


async def test_leaving_the_page_sends_a_pending_delete(
    app: OpenApp, other_client: LeadsApi, http: aiohttp.ClientSession
) -> None:
    lead = await other_client.create(name="Leaving Lou", company="Pagehide Co")
    page = await app()
    await open_saved(page, "Leaving Lou")
    await drawer(page).get_by_test_id("drawer-delete").click()
    await expect(page.get_by_test_id("undo-delete")).to_be_visible()
    await page.goto("about:blank")  # pagehide: the delete the user did not undo goes now
    await settles(lambda: lead_status(http, other_client, lead["id"]), 404)


async def test_drawer_on_a_phone_and_by_keyboard(app: OpenApp, other_client: LeadsApi) -> None:
    await other_client.create(
        name="Phoebe Phone", company="Mobile Co", title="CTO", phones=["+1 415 555 0199"]
    )
    page = await app(**PHONE)
    await page.get_by_role("button", name="Leads", exact=True).click()
    opener = saved_row(page, "Phoebe Phone").get_by_role("button", name="Phoebe Phone")
    await opener.focus()
    await page.keyboard.press("Enter")
    panel = drawer(page)
    await expect(field(page, "Name")).to_have_value("Phoebe Phone")
    await expect(field(page, "Name")).to_be_focused()
    bounds = await panel.bounding_box()
    assert bounds is not None and bounds["width"] == PHONE["width"], bounds
    save = page.get_by_test_id("drawer-save")
    save_box = await save.bounding_box()
    assert save_box is not None and save_box["height"] >= 44, save_box
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    await screenshot(page, "mobile-drawer")
    await page.keyboard.press("Escape")
    await expect(panel).to_be_hidden()
    await expect(opener).to_be_focused()


@pytest.mark.parametrize("first", ["change", "answer"])
async def test_own_write_is_known_whichever_arrives_first(
    app: OpenApp, other_client: LeadsApi, first: str
) -> None:
    """The tab's own change (from the feed) and its PATCH answer race; either order,
    the tab knows its own write, and a teammate's later write still gets the notice."""
    lead = await other_client.create(name="Race Ray", company="Order Co", title="CTO")
    relay = SocketRelay()
    page = await app(before_load=relay.attach)
    answer_held = asyncio.Event()
    release_answer = asyncio.Event()

    async def hold_answer(route: Route) -> None:
        if route.request.method != "PATCH":
            await route.continue_()
            return
        response = await route.fetch()  # the write is done; its change is on its way
        answer_held.set()
        await release_answer.wait()
        await route.fulfill(response=response)

    await open_saved(page, "Race Ray")
    row = saved_row(page, "Race Ray")
    if first == "change":
        await page.route(f"**/api/leads/{lead['id']}", hold_answer)
    else:
        relay.hold("leads:changes")
    await field(page, "Company").fill("Mine Co")
    await page.get_by_test_id("drawer-save").click()
    if first == "change":
        await answer_held.wait()
        await expect(row.locator(".vt-company")).to_contain_text("Mine Co")  # change applied
        release_answer.set()
        await expect(drawer(page).get_by_role("status").first).to_have_text("Saved.")
    else:
        await expect(drawer(page).get_by_role("status").first).to_have_text("Saved.")
        assert relay.held_names() == ["leads:changes"]
        relay.release()
        await expect(row.locator(".vt-company")).to_contain_text("Mine Co")
    notice = drawer(page).get_by_role("alert").filter(has_text=CONFLICT)
    await expect(notice).to_be_hidden()

    await other_client.call("PATCH", f"/api/leads/{lead['id']}", {"title": "CEO"})
    await expect(notice).to_be_visible()
    await expect(field(page, "Title")).to_have_value("CEO")
    await expect(field(page, "Company")).to_have_value("Mine Co")
