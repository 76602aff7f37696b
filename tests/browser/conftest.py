"""Browser tests: Debian's Chromium, driven by Playwright, against `leadstream serve`.

One server (20,000-person directory, dev auth) and one browser serve the whole
session; each test works in an org of its own, so tests do not see each other's
leads. Tests that need another server configuration start their own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from browser_support import CHROMIUM_ARGS, SERVER_ENV, LeadsApi, chromium_executable, dev_token
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from support import ServerProcess

expect.set_options(timeout=15_000)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Chromium (tests/browser)")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_executable()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        await browser.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def leadstream(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerProcess]:
    """`leadstream serve` in dev auth mode with a 20,000-person directory."""
    async with ServerProcess(tmp_path_factory.mktemp("serve"), SERVER_ENV) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def org() -> str:
    """An org of this test's own."""
    return "t" + uuid.uuid4().hex[:10]


@pytest_asyncio.fixture(loop_scope="session")
async def other_client(
    http: aiohttp.ClientSession, leadstream: ServerProcess, org: str
) -> LeadsApi:
    """Another user of the test's org, talking REST."""
    token = await dev_token(http, leadstream.url, org, "colleague")
    return LeadsApi(http, leadstream.url, token)


@pytest_asyncio.fixture(loop_scope="session")
async def new_page(browser: Browser) -> AsyncIterator[Callable[..., Awaitable[Page]]]:
    """Opens pages in fresh contexts; fails the test on any uncaught page error."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    async def open_page(width: int = 1280, height: int = 800, **options: Any) -> Page:
        options = {"locale": "en-US", "timezone_id": "UTC", **options}
        context = await browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True, **options
        )
        contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield open_page
    for context in contexts:
        await context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


@pytest_asyncio.fixture(loop_scope="session")
async def app(
    new_page: Callable[..., Awaitable[Page]],
    http: aiohttp.ClientSession,
    leadstream: ServerProcess,
    org: str,
) -> Callable[..., Awaitable[Page]]:
    """Opens the Leadstream page as `user` (alice) of the test's org, connected, in a
    browser context of its own. `before_load(page)` runs first (to route its WebSocket, say)."""

    async def open_app(
        width: int = 1280,
        height: int = 800,
        before_load: Callable[[Page], Awaitable[None]] | None = None,
        server: ServerProcess | None = None,
        user: str = "alice",
        **options: Any,
    ) -> Page:
        server = server or leadstream
        page = await new_page(width, height, **options)
        if before_load is not None:
            await before_load(page)
        token = await dev_token(http, server.url, org, user)
        await page.goto(f"{server.url}/?token={token}")
        await expect(page.get_by_test_id("conn")).to_have_text("Connected")
        return page

    return open_app
