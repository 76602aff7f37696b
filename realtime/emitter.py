"""Emitting server events to the rooms PROTOCOL.md addresses them to."""

from __future__ import annotations

from typing import Any, Protocol

from leadstream.realtime.rooms import org_feed_room, user_room


class _Emits(Protocol):
    async def emit(self, event: str, data: Any = None, *, to: str | None = None) -> None: ...


class Emitter:
    """Sends events to a user's connections or an org's feed subscribers, on
    every instance (through the Socket.IO manager in use).

    :param sio: an `AsyncServer`, or a write-only `AsyncRedisManager`.
    """

    def __init__(self, sio: _Emits) -> None:
        self._sio = sio

    async def to_user(self, org: str, user: str, event: str, data: dict[str, Any]) -> None:
        await self._sio.emit(event, data, to=user_room(org, user))

    async def to_org_feed(self, org: str, event: str, data: dict[str, Any]) -> None:
        await self._sio.emit(event, data, to=org_feed_room(org))
