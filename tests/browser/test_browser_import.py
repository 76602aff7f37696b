"""CSV import in a real browser: a file picked with "Import CSV" (or dropped on the
saved leads) is uploaded, its progress and then its summary with the rows in error
are shown, and a teammate's open page gets the new leads live."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from browser_support import (
    SERVER_ENV,
    SocketRelay,
    dev_token,
    eventually,
    row_names,
    screenshot,
    settles,
)
from playwright.async_api import Page, expect
from support import ServerProcess

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]
OpenApp = Callable[..., Awaitable[Page]]

GOOD = 30
# Line numbers of the file (header = line 1): rows 2..31 are good, then two bad ones.
LEADS_CSV = (
    "Name,Title,Company,Email,Phone\n"
    + "".join(
        f"Imported Person {n:02d},Buyer,Import Co {n % 4},person{n}@import.example,+1 415 555 01{n:02d}\n"
        for n in range(GOOD)
    )
    + "Bad Email,CEO,Acme,not-an-email,\n"  # line 32
    + ",Nameless,Acme,nameless@import.example,\n"  # line 33
)


def csv_file(text: str, name: str = "leads.csv") -> dict[str, object]:
    return {"name": name, "mimeType": "text/csv", "buffer": text.encode()}


async def test_import_shows_progress_then_the_summary_and_teammates_see_the_leads(
    app: OpenApp,
) -> None:
    teammate = await app(user="bob")
    await expect(teammate.get_by_text("No saved leads yet")).to_be_visible()
    relay = SocketRelay()
    page = await app(before_load=relay.attach)
    relay.hold("import:done")  # the page stays on its progress until released

    await page.get_by_test_id("import-file").set_input_files(csv_file(LEADS_CSV))
    panel = page.get_by_test_id("import-panel")
    await expect(panel).to_be_visible()
    await expect(panel).to_contain_text("Importing “leads.csv”…")
    # The last import:progress of the job: every row read, all of the file's bytes.
    await expect(panel).to_contain_text(f"{GOOD + 2} rows read")
    size = len(LEADS_CSV.encode())
    await expect(panel).to_contain_text(f"{size / 1024:.1f} KB of {size / 1024:.1f} KB")
    progress = page.get_by_test_id("import-progress")
    await expect(progress).to_have_attribute("max", str(size))
    await expect(progress).to_have_attribute("value", str(size))
    await expect(page.get_by_test_id("import")).to_be_disabled()
    await screenshot(page, "import-progress")

    # The teammate's page gets the new leads live, while the importer still waits.
    await expect(teammate.get_by_test_id("saved-foot")).to_have_text(f"All {GOOD} leads shown.")
    await expect(teammate.get_by_test_id("stat-total")).to_have_text(str(GOOD))
    names = await row_names(teammate, "leads")
    assert names and all(name.startswith("Imported Person ") for name in names), names
    await screenshot(teammate, "import-teammate-live")

    assert relay.held_names() == ["import:done"]
    relay.release()
    await expect(panel).to_contain_text("Imported “leads.csv”")
    await expect(page.get_by_test_id("import-counts")).to_have_text(
        f"{GOOD} new leads · 0 updated · 2 rows with errors."
    )
    errors = page.get_by_test_id("import-errors").locator("li")
    await expect(errors).to_have_count(2)
    await expect(errors.nth(0)).to_contain_text("Line 32")
    await expect(errors.nth(0)).to_contain_text("not an email address")
    await expect(errors.nth(1)).to_contain_text("Line 33")
    await expect(errors.nth(1)).to_contain_text("name")
    await expect(page.get_by_test_id("import")).to_be_enabled()
    await screenshot(page, "import-summary")

    # "Show imported leads": the saved list, newest first, without a search.
    await page.get_by_label("Search saved leads").fill("nobody-at-all")
    await expect(page.get_by_text("No leads match")).to_be_visible()
    await page.get_by_role("button", name="Show imported leads").click()
    await expect(page.get_by_label("Search saved leads")).to_have_value("")
    await expect(page.get_by_label("Sort")).to_have_value("createdAt:desc")
    await expect(page.get_by_test_id("saved-foot")).to_have_text(f"All {GOOD} leads shown.")

    # Importing the same file again updates, never duplicates; the teammate still has 30.
    async with page.expect_file_chooser() as chooser:
        await page.get_by_role("button", name="Import another file").click()
    await (await chooser.value).set_files(csv_file(LEADS_CSV))
    await expect(page.get_by_test_id("import-counts")).to_have_text(
        f"0 new leads · {GOOD} updated · 2 rows with errors."
    )
    await expect(teammate.get_by_test_id("stat-total")).to_have_text(str(GOOD))
    await page.get_by_role("button", name="Dismiss").click()
    await expect(panel).to_be_hidden()


async def test_many_row_errors_collapse_and_a_bad_file_says_why(app: OpenApp) -> None:
    page = await app()
    panel = page.get_by_test_id("import-panel")
    bad_rows = "".join(f"Person {n},nobody-{n}\n" for n in range(25))
    await page.get_by_test_id("import-file").set_input_files(
        csv_file("name,email\n" + bad_rows + "Kept Person,kept@example.com\n", "many.csv")
    )
    await expect(page.get_by_test_id("import-counts")).to_have_text(
        "1 new lead · 0 updated · 25 rows with errors."
    )
    errors = page.get_by_test_id("import-errors").locator("li")
    await expect(errors).to_have_count(20)
    await page.get_by_role("button", name="Show all 25 errors (5 more)").click()
    await expect(errors).to_have_count(25)
    await expect(errors.nth(24)).to_contain_text("Line 26")

    # A file without a name column fails as a whole, said once.
    await page.get_by_test_id("import-file").set_input_files(
        csv_file("email,company\nada@example.com,Acme\n", "no-name.csv")
    )
    await expect(panel).to_contain_text("Could not import “no-name.csv”")
    await expect(panel).to_contain_text("The import failed. The header (line 1) has no name column")
    await expect(page.get_by_test_id("import-errors")).to_have_count(0)

    # An empty file is refused by the server (400).
    await page.get_by_test_id("import-file").set_input_files(csv_file("", "empty.csv"))
    await expect(panel).to_contain_text("The file was refused. The CSV file is empty.")

    # A dropped file that is not CSV is not sent; a dropped CSV is imported.
    drop = page.locator("#panel-saved")
    for name, text in (("photo.png", "not a csv"), ("dropped.csv", "name\nDropped Person\n")):
        transfer = await page.evaluate_handle(
            """([name, text]) => {
                const transfer = new DataTransfer();
                const type = name.endsWith(".csv") ? "text/csv" : "image/png";
                transfer.items.add(new File([text], name, { type }));
                return transfer;
            }""",
            [name, text],
        )
        await drop.dispatch_event("dragover", {"dataTransfer": transfer})
        await expect(drop).to_have_class(re.compile("import-dropping"))
        await drop.dispatch_event("drop", {"dataTransfer": transfer})
        await expect(drop).not_to_have_class(re.compile("import-dropping"))
        if name == "photo.png":
            await expect(panel).to_contain_text("“photo.png” is not a CSV file")
    await expect(page.get_by_test_id("import-counts")).to_have_text("1 new lead · 0 updated.")
    await settles(lambda: row_names(page, "leads"), ["Dropped Person", "Kept Person"])


async def test_an_import_whose_done_was_missed_is_caught_up_after_a_reconnect(app: OpenApp) -> None:
    relay = SocketRelay()
    page = await app(before_load=relay.attach)
    relay.hold("import:done")
    await page.get_by_test_id("import-file").set_input_files(csv_file(LEADS_CSV))
    panel = page.get_by_test_id("import-panel")
    await expect(panel).to_contain_text(f"{GOOD + 2} rows read")
    await eventually(lambda: relay.held_names() == ["import:done"])
    await relay.drop()  # import:done is lost with the connection
    relay.hold()
    # Back online, the page asks GET /api/jobs/{id} and shows the job's result.
    await expect(page.get_by_test_id("import-counts")).to_have_text(
        f"{GOOD} new leads · 0 updated · 2 rows with errors."
    )
    await expect(page.get_by_test_id("import-errors").locator("li")).to_have_count(2)


@pytest_asyncio.fixture(loop_scope="session")
async def limited_server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """A server with a 2 KB upload limit and one job per user."""
    env = {
        **SERVER_ENV,
        "LEADSTREAM_PEOPLE": "0",
        "LEADSTREAM_MAX_UPLOAD": "2048",
        "LEADSTREAM_JOBS_PER_USER": "1",
    }
    async with ServerProcess(tmp_path, env) as server:
        yield server


async def test_too_large_and_too_many_jobs_are_explained(
    app: OpenApp, limited_server: ServerProcess, http, org: str
) -> None:
    page = await app(server=limited_server)
    panel = page.get_by_test_id("import-panel")
    big = "name,email\n" + "".join(f"Person {n},p{n}@example.com\n" for n in range(200))
    await page.get_by_test_id("import-file").set_input_files(csv_file(big, "big.csv"))
    await expect(panel).to_contain_text(
        "The file is too large: the limit is 2 KB. Split it into smaller files"
    )

    # Another upload of the same user holds the only job slot while its body arrives.
    token = await dev_token(http, limited_server.url, org, "alice")
    release = asyncio.Event()

    async def held_body() -> AsyncIterator[bytes]:
        yield b"name\n"
        await release.wait()
        yield b"Held Person\n"

    held = asyncio.create_task(
        http.post(
            limited_server.url + "/api/leads/import",
            data=held_body(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
        )
    )
    uploads = limited_server.cwd / "data" / "imports"
    try:
        await eventually(lambda: uploads.exists() and list(uploads.glob("upload-*.part")))
        await page.get_by_test_id("import-file").set_input_files(csv_file("name\nAda\n", "a.csv"))
        await expect(panel).to_contain_text("You already have 1 exports or imports queued")
        await screenshot(page, "import-too-many-jobs")
    finally:
        release.set()
        assert (await held).status == 202
