"""Emitting server events to the rooms PROTOCOL.md addresses them to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from leadstream.realtime.rooms import org_feed_room, user_room


class _Emits(Protocol):
    async def emit(self, event: str, data: Any = None, *, to: str | None = None) -> None: ...


class Emitter:
    """Sends events to a user's connections or an org's feed subscribers, on
    every instance (through the Socket.IO manager in use).

    :param sio: an `AsyncServer`, or a write-only `RoomShardedRedisManager`.
    :param on_emit: called with the event name of each emit (metrics).
    """

    def __init__(self, sio: _Emits, *, on_emit: Callable[[str], None] | None = None) -> None:
        self._sio = sio
        self._on_emit = on_emit

    async def to_user(self, org: str, user: str, event: str, data: dict[str, Any]) -> None:
        await self._emit(event, data, user_room(org, user))

    async def to_org_feed(self, org: str, event: str, data: dict[str, Any]) -> None:
        await self._emit(event, data, org_feed_room(org))

    async def _emit(self, event: str, data: dict[str, Any], room: str) -> None:
        if self._on_emit is not None:
            self._on_emit(event)
        await self._sio.emit(event, data, to=room)
