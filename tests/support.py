"""Test helpers: event logs of real Socket.IO clients, ports, headers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import socketio
from leadstream.server.config import Settings


class EventLog:
    """Records every server event a client receives, and waits for some."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Condition()

    async def record(self, event: str, data: Any) -> None:
        async with self._changed:
            self.events.append((event, data))
            self._changed.notify_all()

    def of(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def wait_for(
        self, event: str, where: Callable[[Any], bool] = lambda _: True, timeout: float = 20
    ) -> Any:
        """The first `event` whose data satisfies `where` (waiting for it if needed)."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for name, data in self.events:
                    if name == event and where(data):
                        return data
                await self._changed.wait()


class Client:
    """A real python-socketio client connected to the server, with its events."""

    def __init__(self, sio: socketio.AsyncClient, log: EventLog) -> None:
        self.sio = sio
        self.log = log

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, timeout=20)

    async def chat(self, text: str, conversation_id: str | None = None) -> dict[str, Any]:
        """Send a message and wait for its reply to finish; returns the chat:done data."""
        payload = {"text": text}
        if conversation_id:
            payload["conversationId"] = conversation_id
        ack = await self.call("chat:send", payload)
        assert ack["ok"], ack
        done = await self.log.wait_for("chat:done", lambda d: d["messageId"] == ack["messageId"])
        return {**done, "ack": ack}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_with(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)
