"""Helpers of the browser tests: the Chromium binary, REST as another client,
tokens, screenshots, and a WebSocket relay that can hold or drop Socket.IO traffic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, WebSocketRoute, expect

CHROMIUM = os.environ.get("LEADSTREAM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"
SERVER_ENV = {"LEADSTREAM_AUTH": "dev", "LEADSTREAM_PEOPLE": "20000"}
SOCKET_IO = re.compile(r".*/socket\.io/.*")
CSV_COLUMNS = "Name,Company,Phone,Email,LinkedIn,Title,Location,Industry,Tags,Added,Phones,Emails"
PHONE = {"width": 390, "height": 844, "is_mobile": True, "has_touch": True}  # options of app()


def chromium_executable() -> str:
    """Debian's chromium (or LEADSTREAM_CHROMIUM); a clear failure when it is missing."""
    path = shutil.which(CHROMIUM)
    if path is None:
        pytest.fail(
            f"Chromium not found at {CHROMIUM!r}. The browser tests drive Debian's chromium "
            "(apt-get install chromium) with Playwright; Playwright's own browser download "
            "is not used. Set LEADSTREAM_CHROMIUM to another Chromium binary if needed.",
            pytrace=False,
        )
    return path


async def dev_token(http: aiohttp.ClientSession, base: str, org: str, user: str) -> str:
    async with http.post(base + "/api/dev/token", json={"org": org, "user": user}) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["token"]


class LeadsApi:
    """REST calls of another client of the same org (a second user)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http = http
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(
            method, self.base + path, json=body, headers=self.headers
        ) as response:
            assert response.status < 400, (response.status, await response.text())
            return None if response.status == 204 else await response.json()

    async def create(self, **fields: Any) -> dict[str, Any]:
        return await self.call("POST", "/api/leads", fields)


async def screenshot(page: Page, name: str) -> Path:
    """Saves a screenshot under screenshots/ (git-ignored) for people to look at."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path))
    return path


def socket_event(frame: str | bytes) -> str | None:
    """The event name of a Socket.IO EVENT packet (`42["name",...]`), else None."""
    if isinstance(frame, bytes):
        return None
    match = re.match(r'42(?:/[^,]*,)?\d*\["([^"]+)"', frame)
    return match.group(1) if match else None


class SocketRelay:
    """Sits between the page and the server on every Socket.IO WebSocket.

    `hold(events)` keeps those server events from reaching the page (as a slow
    link would) until `release()`; `drop()` cuts the current connections, and
    while `blocked` new ones are refused, so the page has to reconnect later.
    `sent` records the events the page sent.
    """

    def __init__(self) -> None:
        self.blocked = False
        self.held_events: frozenset[str] = frozenset()
        self.held: list[tuple[WebSocketRoute, str | bytes]] = []
        self.sent: list[str | bytes] = []
        self.routes: list[tuple[WebSocketRoute, WebSocketRoute]] = []

    async def attach(self, page: Page) -> None:
        await page.route_web_socket(SOCKET_IO, self._route)

    async def _route(self, ws: WebSocketRoute) -> None:
        if self.blocked:
            # Never connected to the server: the page's socket is closed at once.
            await ws.close(code=1011, reason="link down (test)")
            return
        server = ws.connect_to_server()
        self.routes.append((ws, server))

        def from_page(frame: str | bytes) -> None:
            self.sent.append(frame)
            server.send(frame)

        def from_server(frame: str | bytes) -> None:
            if socket_event(frame) in self.held_events:
                self.held.append((ws, frame))
            else:
                ws.send(frame)

        ws.on_message(from_page)
        server.on_message(from_server)

    def hold(self, *events: str) -> None:
        self.held_events = frozenset(events)

    def release(self) -> None:
        self.held_events = frozenset()
        held, self.held = self.held, []
        for ws, frame in held:
            ws.send(frame)

    def held_names(self) -> list[str | None]:
        return [socket_event(frame) for _, frame in self.held]

    def sent_events(self, name: str) -> list[str | bytes]:
        return [frame for frame in self.sent if socket_event(frame) == name]

    async def drop(self) -> None:
        """Cuts every open connection; held frames are lost with it."""
        self.held = []
        routes, self.routes = self.routes, []
        for ws, server in routes:
            await ws.close(code=1001, reason="link dropped (test)")
            # Playwright 1.64 closes the server side synchronously under an async
            # wrapper, which then fails to await None; the close itself has happened.
            with contextlib.suppress(TypeError):
                await server.close(code=1001, reason="link dropped (test)")


async def eventually(check: Callable[[], Any], timeout: float = 15) -> Any:
    """Polls `check` until it returns something truthy (for state outside the page)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


async def settles(get: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 15) -> None:
    """Waits until `await get()` equals `expected` (like expect.poll of Playwright for JS)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await get()
        if value == expected:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"expected {expected!r}, still {value!r} after {timeout}s")
        await asyncio.sleep(0.05)


async def send(page: Page, text: str) -> None:
    """Types a message in the chat pane and presses Enter."""
    box = page.get_by_label("Message the assistant")
    await box.fill(text)
    await box.press("Enter")


async def reply_done(page: Page) -> None:
    """Waits until no reply is generating (Send is back, no bubble is busy)."""
    await expect(page.get_by_test_id("send")).to_be_visible()
    await expect(page.locator(".lc-assistant[aria-busy='true']")).to_have_count(0)


async def row_names(page: Page, test_id: str) -> list[str]:
    """Names of the rendered rows of a lead table, in row order."""
    return await page.get_by_test_id(test_id).evaluate(
        """table => [...table.querySelectorAll('.vt-body .vt-row')]
            .sort((a, b) => a.getAttribute('aria-rowindex') - b.getAttribute('aria-rowindex'))
            .map(row => row.querySelector('.vt-name .vt-primary').textContent)"""
    )
