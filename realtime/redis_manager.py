"""A Socket.IO client manager over Redis whose cost per instance follows its
own clients: each room's emits go on that room's channel, and an instance
subscribes to a room's channel only while the room has members on it (as
Node's sharded socket.io Redis adapter does).

python-socketio's `AsyncRedisManager` publishes every emit on one channel, so
every instance receives and decodes every emit of every org. Here:

- a room emit is encoded once (the Socket.IO packet text), delivered to this
  instance's members, and published on `{channel}#{namespace}#{room}#` as
  `host id + small JSON header + "\\n" + packet`; a receiving instance reads
  the header and writes the packet text as is to its members, without
  decoding the payload;
- the instance SSUBSCRIBEs (sharded pub/sub, Redis >= 7, required on a
  Cluster; classic SUBSCRIBE before 7) on a room's first local member and
  unsubscribes on its last leave, in batches, from one task so the order of
  joins and leaves is kept; joining a room returns once the subscription is
  confirmed, so nothing published after the join is missed;
- everything else (cross-instance `disconnect`, `enter_room`, `leave_room`,
  `close_room`, callbacks, emits to the whole namespace, to a list of rooms,
  to a sid or with a callback) goes through python-socketio's own messages on
  one small control channel every instance subscribes to.

On a Redis Cluster every channel, the control channel included, is sharded:
SPUBLISH goes through the cluster client to the primary owning the channel's
slot, and the subscriber keeps a connection per primary owning a wanted
channel (`realtime/subscriptions.py`, `ClusterRoomSubscriptions`). A classic
PUBLISH would work too, but a cluster copies it to every node.

Messages are JSON (never pickle). The API is `AsyncPubSubManager`'s, so
`emit(to=room)`, `enter_room`, `disconnect` from any instance and the
write-only manager of `leadstream worker` work as before.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError
from socketio.async_pubsub_manager import AsyncPubSubManager

from leadstream.realtime.delivery import DirectDeliveryManager
from leadstream.realtime.subscriptions import RECONNECT, ClusterRoomSubscriptions, RoomSubscriptions
from leadstream.server.redis_connections import REDIS_ERRORS

log = logging.getLogger(__name__)

# engine.io session ids (and so sid rooms): 20 characters of url-safe base64.
# Emits to them use the control channel, as Node's adapter does in "dynamic" mode.
SID_SHAPE = re.compile(r"[A-Za-z0-9_-]{20}")
# How long joining a new room waits for its subscription to be confirmed.
SUBSCRIBE_WAIT_S = 2.0
HOST_ID_LEN = 32  # uuid4().hex, the prefix of every room message


async def redis_supports_sharded_pubsub(client: aioredis.Redis) -> bool:
    """Whether the server has SPUBLISH/SSUBSCRIBE (Redis >= 7)."""
    info = await client.info("server")
    major = int(str(info.get("redis_version", "0")).split(".")[0])
    return major >= 7


class RoomShardedRedisManager(AsyncPubSubManager, DirectDeliveryManager):
    """python-socketio's pub/sub manager with a Redis channel per room.

    :param client: a redis-py asyncio client: a server's, a Sentinel
        primary's, or a `RedisCluster` (every channel is then sharded, the
        control channel too, and each is subscribed on the primary owning
        its slot: Redis >= 7).
    :param on_close: awaited by `close` once the subscriber stopped (to close
        the client, which the caller owns otherwise).
    :param channel: prefix of every channel; the same on every instance.
    :param write_only: only emit (a process without clients, `leadstream worker`).
    :param sharded: SPUBLISH/SSUBSCRIBE for room channels [detected: Redis >= 7;
        always on a cluster].
    :param json: JSON module with `dumps`/`loads` (orjson through `json_codec`).
    """

    name = "leadstream-room-sharded-redis"

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        *,
        on_close: Callable[[], Awaitable[None]] | None = None,
        channel: str = "leadstream:sio",
        write_only: bool = False,
        sharded: bool | None = None,
        json: Any = None,
        logger: logging.Logger | None = None,
    ) -> None:
        # AsyncPubSubManager first in the MRO (it calls on to DirectDeliveryManager)
        AsyncPubSubManager.__init__(
            self, channel=channel, write_only=write_only, logger=logger, json=json
        )
        self.redis = client
        self._on_close = on_close
        self.cluster = isinstance(client, RedisCluster)
        if self.cluster and sharded is False:
            raise ValueError("on a Redis Cluster room channels are sharded (Redis >= 7)")
        self.sharded = True if self.cluster else sharded
        self.control_channel = f"{channel}#control"
        self._host = self.host_id.encode()
        self.subscriptions: RoomSubscriptions | ClusterRoomSubscriptions | None = None

    def room_channel(self, namespace: str, room: str) -> str:
        """The channel of a room's emits."""
        return f"{self.channel}#{namespace}#{room}#"

    # -- emitting ---------------------------------------------------------

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        """Emit on every instance: delivered here, published on the room's
        channel. Parameters as `socketio.AsyncServer.emit`."""
        room = to or room
        namespace = namespace or "/"
        if kwargs.get("ignore_queue"):
            await DirectDeliveryManager.emit(
                self, event, data, namespace, room=room, skip_sid=skip_sid, callback=callback
            )
            return
        if callback is not None or not _has_own_channel(room):
            await super().emit(
                event, data, namespace=namespace, room=room, skip_sid=skip_sid, callback=callback
            )
            return
        encoded = self.encode_event(event, data, namespace)
        if self.server is not None:
            self.deliver(namespace, room, skip_sid, encoded)
        header = self.json.dumps({"n": namespace, "r": room, "s": skip_sid})
        await self._send(self.room_channel(namespace, room), f"{self.host_id}{header}\n{encoded}")

    async def _publish(self, data: dict[str, Any]) -> None:
        """python-socketio's own messages: a room's emit (with a callback) on
        the room's channel, anything else on the control channel."""
        room: Any = data.get("room")
        if data.get("method") == "emit" and _has_own_channel(room):
            channel = self.room_channel(data.get("namespace") or "/", room)
        else:
            channel = self.control_channel
        # A cluster would broadcast a classic PUBLISH to every node: its control
        # channel is sharded, on one node, like a room's.
        sharded = self.cluster or channel != self.control_channel
        await self._send(channel, self.json.dumps(data), sharded=sharded)

    async def _send(self, channel: str, message: str, *, sharded: bool = True) -> None:
        for attempt in (1, 2):  # the client reconnects on the second
            try:
                if sharded and await self._sharded():
                    await self.redis.spublish(channel, message)
                else:
                    await self.redis.publish(channel, message)
                return
            except REDIS_ERRORS as exc:
                if attempt == 2:
                    log.warning("could not publish on %s (delivered here only): %s", channel, exc)

    async def _sharded(self) -> bool:
        if self.sharded is None:
            assert isinstance(self.redis, aioredis.Redis)  # a cluster is always sharded
            self.sharded = await redis_supports_sharded_pubsub(self.redis)
        return self.sharded

    # -- rooms ------------------------------------------------------------

    async def enter_room(
        self, sid: str, namespace: str, room: Any, eio_sid: str | None = None
    ) -> None:
        """Join `room`; for a room new to this instance, return once its
        channel is subscribed (so its next emit, from anywhere, arrives)."""
        await super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        if self.subscriptions is not None and _has_own_channel(room):
            await self.subscriptions.ready(self.room_channel(namespace, room), SUBSCRIBE_WAIT_S)

    def room_populated(self, namespace: str, room: str) -> None:
        if self.subscriptions is not None and _has_own_channel(room):
            self.subscriptions.want(self.room_channel(namespace, room))

    def room_emptied(self, namespace: str, room: str) -> None:
        if self.subscriptions is not None and _has_own_channel(room):
            self.subscriptions.drop(self.room_channel(namespace, room))

    # -- listening --------------------------------------------------------

    def initialize(self) -> None:
        """Called by the server before its first request: start listening."""
        if not self.write_only:
            # Rooms are only joined once the server runs, so none is missed here.
            if isinstance(self.redis, RedisCluster):
                self.subscriptions = ClusterRoomSubscriptions(self.redis, self.control_channel)
            else:
                self.subscriptions = RoomSubscriptions(
                    self.redis, self.control_channel, sharded=bool(self.sharded)
                )
        super().initialize()  # starts `_thread` unless write-only

    async def _thread(self) -> None:
        assert self.subscriptions is not None
        while self.sharded is None:
            try:
                self.subscriptions.sharded = await self._sharded()
            except RedisError as exc:
                self.subscriptions.down = True
                log.warning("cannot reach Redis to start the socket.io subscriber: %s", exc)
                await asyncio.sleep(RECONNECT.delay(1))
        self.subscriptions.sharded = self.sharded
        await self.subscriptions.run(self._on_message)

    async def _on_message(self, data: bytes) -> None:
        """One published message: a room emit (host id, header, packet text)
        or python-socketio's JSON message."""
        try:
            if data[:1] != b"{":
                if data[:HOST_ID_LEN] == self._host:
                    return  # ours, already delivered here
                head, _, body = data[HOST_ID_LEN:].partition(b"\n")
                header = self.json.loads(head)
                self.deliver(header["n"], header["r"], header["s"], body.decode())
                return
            message = self.json.loads(data)
            method = message.get("method")
            if method == "callback":
                await self._handle_callback(message)
            elif message.get("host_id") != self.host_id:
                handler = self._handlers().get(method)
                if handler is not None:
                    await handler(message)
        except Exception:
            # One bad message (or a failing handler) must not stop the subscriber.
            log.exception("could not handle a socket.io message from Redis")

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[None]]]:
        return {
            "emit": self._handle_emit,
            "disconnect": self._handle_disconnect,
            "enter_room": self._handle_enter_room,
            "leave_room": self._handle_leave_room,
            "close_room": self._handle_close_room,
        }

    async def close(self) -> None:
        """Stop listening, then run `on_close`."""
        listener = getattr(self, "thread", None)  # set by `initialize`
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        if self._on_close is not None:
            await self._on_close()


def _has_own_channel(room: Any) -> bool:
    """Whether emits to `room` go on a channel of their own: a named room, not
    the whole namespace, a list of rooms, or a sid."""
    return isinstance(room, str) and SID_SHAPE.fullmatch(room) is None
