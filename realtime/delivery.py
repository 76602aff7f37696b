"""Room delivery for many sockets: one encoded packet per emit, written
straight into each local recipient's engine.io queue, and room bookkeeping
whose cost on a disconnect is that of the socket's own rooms.

python-socketio's `AsyncManager` schedules a task per recipient for each
room emit, and its `basic_disconnect` copies and scans every room of the
namespace on each disconnect (one room per socket makes 20,000 sockets
leaving at once quadratic). `DirectDeliveryManager` keeps its API and data
(`rooms`, `pending_connect`, ...) and fixes both:

- an emit encodes the Socket.IO packet and its websocket frame once and
  writes the frame straight to each recipient's transport when nothing is
  queued for it (`TrackedWebSocket.write_now`); otherwise, and for
  long-polling, it enqueues the same engine.io packet without awaiting
  (engine.io's socket `send` is a put on an unbounded queue, preceded by a
  ping check; the rare socket whose ping is overdue takes that slow path,
  which closes it);
- a `sid -> rooms` index makes leaving every room on disconnect, and
  `get_rooms`, cost the rooms of that sid; the pending connect/disconnect
  lists are dict-backed so membership checks do not scan.

Subclasses learn when a room gets its first local member and loses its last
one (`room_populated`, `room_emptied`): the Redis manager subscribes to a
room's channel only while it has local members.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Collection
from typing import Any

from engineio import packet as eio_packet
from socketio import AsyncManager
from socketio import packet as sio_packet

from leadstream.realtime.websocket import text_frame


class SidSet(dict[str, None]):
    """An insertion-ordered set of sids with the list methods python-socketio
    calls on its pending lists (`append`, `remove`, `in`, `len`), in O(1)."""

    def append(self, sid: str) -> None:
        self[sid] = None

    def remove(self, sid: str) -> None:
        del self[sid]


class DirectDeliveryManager(AsyncManager):
    """The in-process Socket.IO client manager (also the base of
    `RoomShardedRedisManager`): same API as `socketio.AsyncManager`, with
    per-emit cost of one encode plus one queue append per recipient, and
    per-disconnect cost of the socket's own rooms."""

    def __init__(self) -> None:
        super().__init__()
        # namespace -> sid -> the rooms it is in (None and its own sid room included)
        self._rooms_of: dict[str, dict[str, set[Any]]] = {}

    # -- delivery ---------------------------------------------------------

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        """Emit to a room, a list of rooms, or the whole namespace (room None).

        The parameters are those of `socketio.AsyncManager.emit`. With a
        callback each recipient needs its own ack id, so the library's path is
        taken.
        """
        room = to or room
        if namespace not in self.rooms:
            return
        if callback is not None:
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback
            )
            return
        self.deliver(namespace, room, skip_sid, self.encode_event(event, data, namespace))

    def encode_event(self, event: str, data: Any, namespace: str) -> str:
        """The Socket.IO EVENT packet for `emit(event, data)`, as text.

        A tuple is spread over several arguments, None is no argument. Binary
        attachments are not part of our protocol: the JSON module refuses bytes.
        """
        if isinstance(data, tuple):
            args = [event, *data]
        elif data is None:
            args = [event]
        else:
            args = [event, data]
        pkt = self._packet_class()(sio_packet.EVENT, namespace=namespace, data=args, binary=False)
        return pkt.encode()

    def deliver(self, namespace: str, room: Any, skip_sid: Any, encoded: str) -> int:
        """Enqueue the encoded packet on each local member of `room` (a name,
        a list of names, or None for the namespace) but `skip_sid` (a sid or a
        list). Returns how many sockets it was written to."""
        rooms = self.rooms.get(namespace)
        if not rooms:
            return 0
        recipients = _recipients(rooms, room)
        if not recipients:
            return 0  # the frame is built only for an emit with local members
        skip = _as_set(skip_sid)
        eio_pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        frame = text_frame(eio_pkt.encode().encode())
        eio = self.server.eio
        sockets = eio.sockets
        writers = getattr(eio, "direct_writers", {})  # none on a bare engine.io server
        timeout = eio.ping_timeout
        now = time.time()
        overdue: list[Any] = []
        sent = 0
        for sid, eio_sid in recipients:
            if sid in skip:
                continue
            socket = sockets.get(eio_sid)
            if socket is None or socket.closed:
                continue
            if socket.last_ping and now - socket.last_ping > timeout:
                overdue.append(socket)  # engine.io's send closes it
                continue
            writer = writers.get(eio_sid)
            if writer is None or not writer.write_now(frame):
                socket.queue.put_nowait(eio_pkt)  # behind what is queued, or long-polling
            sent += 1
        for socket in overdue:
            self.server.start_background_task(socket.send, eio_pkt)
        return sent

    def _packet_class(self) -> type[sio_packet.Packet]:
        if self.server is not None:
            return self.server.packet_class
        return _packet_class_for(self.json)  # a write-only manager has no server

    async def close(self) -> None:
        """Release what the manager holds (nothing here; the Redis manager's
        subscriber and client)."""

    # -- room bookkeeping -------------------------------------------------

    async def pre_connect(self, eio_sid: str, namespace: str) -> str | None:
        self.pending_connect.setdefault(namespace, SidSet())
        return await super().pre_connect(eio_sid, namespace)

    def pre_disconnect(self, sid: str, namespace: str) -> str | None:
        self.pending_disconnect.setdefault(namespace, SidSet())
        return super().pre_disconnect(sid, namespace)

    def basic_enter_room(
        self, sid: str, namespace: str, room: Any, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._rooms_of.setdefault(namespace, {}).setdefault(sid, set()).add(room)
        if room is not None and room != sid and len(self.rooms[namespace][room]) == 1:
            self.room_populated(namespace, room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        members = self.rooms.get(namespace, {}).get(room)
        if members is None or sid not in members:
            return
        super().basic_leave_room(sid, namespace, room)
        rooms_of = self._rooms_of.get(namespace, {})
        joined = rooms_of.get(sid)
        if joined is not None:
            joined.discard(room)
            if not joined:
                del rooms_of[sid]
        if room is not None and room != sid and room not in self.rooms.get(namespace, {}):
            self.room_emptied(namespace, room)

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """Leave every room of `sid` (found in the index, not by scanning) and
        drop its callbacks and pending state."""
        if namespace not in self.rooms:
            return
        joined = self._rooms_of.get(namespace, {}).pop(sid, set())
        for room in joined:
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        """The rooms `sid` is in (its own sid room included, as the library does)."""
        return [r for r in self._rooms_of.get(namespace, {}).get(sid, ()) if r is not None]

    def room_populated(self, namespace: str, room: str) -> None:
        """Called when `room` gets its first member on this instance."""

    def room_emptied(self, namespace: str, room: str) -> None:
        """Called when the last member of `room` on this instance leaves it."""


@functools.cache
def _packet_class_for(json: Any) -> type[sio_packet.Packet]:
    """A Socket.IO packet class that encodes with `json` (orjson here)."""
    return type("JsonPacket", (sio_packet.Packet,), {"json": json})


def _as_set(skip_sid: Any) -> frozenset[Any] | set[Any]:
    if skip_sid is None:
        return frozenset()
    if isinstance(skip_sid, (list, tuple, set, frozenset)):
        return set(skip_sid)
    return {skip_sid}


def _recipients(rooms: dict[Any, Any], room: Any) -> Collection[tuple[str, str]]:
    """(sid, eio_sid) of the members of `room`, each once; reads the bidicts'
    forward dicts without copying (delivery does not await while iterating)."""
    if room is None:
        return rooms[None]._fwdm.items() if None in rooms else ()
    if isinstance(room, str):
        members = rooms.get(room)
        return members._fwdm.items() if members is not None else ()
    union: dict[str, str] = {}
    for name in room:
        members = rooms.get(name)
        if members is not None:
            union.update(members._fwdm)
    return union.items()
