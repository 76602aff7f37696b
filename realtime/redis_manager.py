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
from redis.exceptions import RedisError
from socketio.async_pubsub_manager import AsyncPubSubManager

from leadstream.realtime.delivery import DirectDeliveryManager

log = logging.getLogger(__name__)

# engine.io session ids (and so sid rooms): 20 characters of url-safe base64.
# Emits to them use the control channel, as Node's adapter does in "dynamic" mode.
SID_SHAPE = re.compile(r"[A-Za-z0-9_-]{20}")
# How long joining a new room waits for its subscription to be confirmed.
SUBSCRIBE_WAIT_S = 2.0
# Channels per SUBSCRIBE/UNSUBSCRIBE command when many change at once.
SUBSCRIBE_BATCH = 500
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
HOST_ID_LEN = 32  # uuid4().hex, the prefix of every room message


async def redis_supports_sharded_pubsub(client: aioredis.Redis) -> bool:
    """Whether the server has SPUBLISH/SSUBSCRIBE (Redis >= 7)."""
    info = await client.info("server")
    major = int(str(info.get("redis_version", "0")).split(".")[0])
    return major >= 7


class RoomSubscriptions:
    """The subscriber connection of one instance: the control channel always,
    and each room channel this instance wants, kept in step with `want` and
    `drop` by one task, and restored after a reconnect.

    :param client: a redis-py asyncio client.
    :param control: the control channel (classic pub/sub).
    :param sharded: room channels use SSUBSCRIBE rather than SUBSCRIBE.
    """

    def __init__(self, client: aioredis.Redis, control: str, *, sharded: bool) -> None:
        self._client = client
        self._control = control
        self.sharded = sharded
        self._wanted: set[str] = set()
        self._requested: set[str] = set()  # sent to the current connection
        self._confirmed: set[str] = set()  # the server said it is subscribed
        self._unconfirmed: dict[str, int] = {}  # commands sent, not yet confirmed
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._changed = asyncio.Event()
        self.down = False  # Redis is away: joins do not wait for subscriptions
        self._connection = 0  # which connection `_sync` serves

    @property
    def channels(self) -> frozenset[str]:
        """Room channels confirmed subscribed on the current connection."""
        return frozenset(self._confirmed)

    def want(self, channel: str) -> None:
        self._wanted.add(channel)
        self._changed.set()

    def drop(self, channel: str) -> None:
        self._wanted.discard(channel)
        self._changed.set()

    async def ready(self, channel: str, within_s: float) -> bool:
        """Wait until `channel` is subscribed (at once if Redis is away: there
        is nothing to wait for then). False if it took longer than `within_s`."""
        if self.down or channel not in self._wanted or self._is_ready(channel):
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        try:
            async with asyncio.timeout(within_s):
                await waiter
            return True
        except TimeoutError:
            log.warning("subscribing to %s took over %.1fs", channel, within_s)
            return False
        finally:
            waiters = self._waiters.get(channel)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[channel]

    async def run(self, on_message: Callable[[bytes], Awaitable[None]]) -> None:
        """Listen for ever: subscribe, pass each message to `on_message`,
        reconnect with a capped backoff when Redis goes away."""
        delay = RETRY_MIN_S
        while True:
            try:
                await self._session(on_message)
            except RedisError as exc:
                if not self.down:  # it was connected: the backoff starts over
                    delay = RETRY_MIN_S
                self.down = True
                log.warning("socket.io subscriber lost Redis (retrying in %.1fs): %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _session(self, on_message: Callable[[bytes], Awaitable[None]]) -> None:
        """One connection: subscribe to everything wanted, then listen until it fails."""
        pubsub = self._client.pubsub()
        syncing: asyncio.Task[None] | None = None
        try:
            await pubsub.subscribe(self._control)
            self.down = False
            self._requested.clear()
            self._confirmed.clear()
            self._unconfirmed.clear()
            self._changed.set()
            self._connection += 1
            syncing = asyncio.create_task(
                self._sync(pubsub, self._connection), name="socketio-subscriptions"
            )
            async for message in pubsub.listen():
                kind = message["type"]
                if kind in ("message", "smessage"):
                    await on_message(message["data"])
                elif message["channel"] != self._control.encode():
                    self._confirm(kind, message["channel"].decode())
        finally:
            if syncing is not None:
                # redis-py can swallow a cancel that lands inside a command: the
                # loop also ends when it sees that its connection is over.
                self._connection += 1
                self._changed.set()
                syncing.cancel()
                await asyncio.gather(syncing, return_exceptions=True)
            await pubsub.aclose()

    async def _sync(self, pubsub: Any, connection: int) -> None:
        """Send the (un)subscriptions that `want`/`drop` asked for, in order;
        a failed command ends the connection (the next one subscribes afresh)."""
        try:
            await self._sync_changes(pubsub, connection)
        except RedisError as exc:
            log.warning("socket.io subscriber could not (un)subscribe: %s", exc)
            await pubsub.aclose()  # ends `listen` in `_session`

    async def _sync_changes(self, pubsub: Any, connection: int) -> None:
        subscribe = pubsub.ssubscribe if self.sharded else pubsub.subscribe
        unsubscribe = pubsub.sunsubscribe if self.sharded else pubsub.unsubscribe
        while True:
            await self._changed.wait()
            if connection != self._connection:
                return
            self._changed.clear()
            gone = sorted(self._requested - self._wanted)
            new = sorted(self._wanted - self._requested)
            for start in range(0, len(gone), SUBSCRIBE_BATCH):
                batch = gone[start : start + SUBSCRIBE_BATCH]
                self._sent(batch)
                self._requested.difference_update(batch)
                await unsubscribe(*batch)
            for start in range(0, len(new), SUBSCRIBE_BATCH):
                batch = new[start : start + SUBSCRIBE_BATCH]
                self._sent(batch)
                self._requested.update(batch)
                await subscribe(*batch)

    def _sent(self, channels: list[str]) -> None:
        for channel in channels:
            self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1

    def _confirm(self, kind: str, channel: str) -> None:
        count = self._unconfirmed.get(channel, 0) - 1
        if count > 0:
            self._unconfirmed[channel] = count
        else:
            self._unconfirmed.pop(channel, None)
        if kind in ("subscribe", "ssubscribe"):
            self._confirmed.add(channel)
        else:
            self._confirmed.discard(channel)
        if self._is_ready(channel):
            for waiter in self._waiters.pop(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)

    def _is_ready(self, channel: str) -> bool:
        return channel in self._confirmed and channel not in self._unconfirmed


class RoomShardedRedisManager(AsyncPubSubManager, DirectDeliveryManager):
    """python-socketio's pub/sub manager with a Redis channel per room.

    :param client: a redis-py asyncio client (a server's or a Sentinel primary's).
    :param on_close: awaited by `close` once the subscriber stopped (to close
        the client, which the caller owns otherwise).
    :param channel: prefix of every channel; the same on every instance.
    :param write_only: only emit (a process without clients, `leadstream worker`).
    :param sharded: SPUBLISH/SSUBSCRIBE for room channels [detected: Redis >= 7].
    :param json: JSON module with `dumps`/`loads` (orjson through `json_codec`).
    """

    name = "leadstream-room-sharded-redis"

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        on_close: Callable[[], Awaitable[None]] | None = None,
        channel: str = "leadstream:sio",
        write_only: bool = False,
        sharded: bool | None = None,
        json: Any = None,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(channel=channel, write_only=write_only, logger=logger, json=json)
        self.redis = client
        self._on_close = on_close
        self.sharded = sharded
        self.control_channel = f"{channel}#control"
        self._host = self.host_id.encode()
        self.subscriptions: RoomSubscriptions | None = None

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
        await self._send(channel, self.json.dumps(data), sharded=channel != self.control_channel)

    async def _send(self, channel: str, message: str, *, sharded: bool = True) -> None:
        for attempt in (1, 2):  # the client reconnects on the second
            try:
                if sharded and await self._sharded():
                    await self.redis.spublish(channel, message)
                else:
                    await self.redis.publish(channel, message)
                return
            except RedisError as exc:
                if attempt == 2:
                    log.warning("could not publish on %s (delivered here only): %s", channel, exc)

    async def _sharded(self) -> bool:
        if self.sharded is None:
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
                await asyncio.sleep(RETRY_MIN_S)
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
