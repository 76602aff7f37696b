"""The Socket.IO server: transport settings, the Redis manager when
configured, connection auth, and the transport's own guards (binary packets,
refused or overdue connects, token expiry). Event handlers live in `chat` and
`feed`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import re
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import engineio
import socketio
from aiohttp import web
from socketio import packet

from leadstream.pacing import PacedCalls
from leadstream.realtime import json_codec
from leadstream.realtime.acks import failure
from leadstream.realtime.delivery import DirectDeliveryManager
from leadstream.realtime.expiries import ExpiryWheel
from leadstream.realtime.limits import ConnectionLimits
from leadstream.realtime.redis_manager import RoomShardedRedisManager
from leadstream.realtime.rooms import user_room
from leadstream.realtime.websocket import (
    PacketQueue,
    PingWheel,
    TrackedWebSocket,
    is_ping_of_a_socket,
)
from leadstream.server.auth import AuthError, TokenSigner
from leadstream.server.redis_connections import ClientOptions, RedisConnections

if TYPE_CHECKING:
    from leadstream.server.metrics import Metrics

log = logging.getLogger(__name__)


# Fail fast when Redis is away: emits still reach this instance's clients
# (the manager delivers locally before publishing), others catch up
# through the change log.
SOCKET_MANAGER_REDIS = ClientOptions(socket_timeout_s=2.0, connect_timeout_s=1.0, retries=0)
# Time for a refusal (CONNECT_ERROR, DISCONNECT) to reach the client before its
# transport is cut; a well-behaved client closes it sooner itself.
CLOSE_GRACE_S = 0.5
# Events are refused from a token's expiry on; an idle connection is cut this
# much later (the token check's own leeway), so a busy one learns why first.
EXPIRY_GRACE_S = 1.0
# Socket.IO packet types that announce binary attachments (not in our protocol).
BINARY_TYPES = frozenset({str(packet.BINARY_EVENT), str(packet.BINARY_ACK)})
# The head of an EVENT packet: `2`, an optional `/namespace,`, an optional ack id.
UNDECODABLE_EVENT = re.compile(r"2(?P<namespace>/[^,]{0,200},)?(?P<id>\d{1,15})?")


# Ended websocket sessions torn down per turn of the event loop (~50 µs each):
# a mass disconnect leaves the loop free for other work every few ms.
SESSION_ENDS_PER_TURN = 64


class EngineServer(engineio.AsyncServer):
    """The engine.io server, able to end a session on the server's say-so:
    its packets are ignored from then on and its transport is closed.

    :param websocket_deflate: negotiate permessage-deflate with clients that offer it.
    """

    def __init__(self, *, websocket_deflate: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.websocket_deflate = websocket_deflate
        self._async: dict[str, Any] = {**self._async, "websocket": TrackedWebSocket}
        self._pings = PingWheel(self)
        # shared by the websocket writers
        self.writer_context: contextvars.Context = contextvars.Context()
        # The connection of each websocket session, by session id (to cut it).
        self.websocket_transports: dict[str, asyncio.Transport | None] = {}
        # Websockets served by our own loop, by session id: emits write to them directly.
        self.direct_writers: dict[str, TrackedWebSocket] = {}
        # Sessions whose connection ended are torn down this many per loop turn.
        self.session_ends = PacedCalls(SESSION_ENDS_PER_TURN)
        self._ending: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def is_ending(self, sid: str) -> bool:
        """Whether `sid` was ended (or is about to be): its packets are to be ignored."""
        return sid in self._ending or sid not in self.sockets

    async def end(self, sid: str, *, grace_s: float = 0.0) -> None:
        """End a session: ignore what it sends from now on, and close it after
        `grace_s` (so packets already queued for it, a refusal, can still go out)."""
        if sid not in self.sockets or sid in self._ending:
            return
        self._ending.add(sid)
        if grace_s > 0:
            asyncio.get_running_loop().call_later(grace_s, lambda: self.spawn(self._close(sid)))
        else:
            await self._close(sid)

    def start_background_task(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        """engine.io's, but a socket's next ping goes on the shared `PingWheel`
        (engine.io would start a task that sleeps a ping interval)."""
        if is_ping_of_a_socket(target) and not args and not kwargs:
            self._pings.schedule(target.__self__.sid)
            return None
        return super().start_background_task(target, *args, **kwargs)

    def create_queue(self, *args: Any, **kwargs: Any) -> PacketQueue:
        """Each socket's outgoing queue: a `PacketQueue` (engine.io's is an `asyncio.Queue`)."""
        return PacketQueue()

    def stop_timers(self) -> None:
        """Stop the shared ping timer (on shutdown)."""
        self._pings.close()

    async def close_websockets(self, timeout_s: float = 5.0) -> None:
        """Cut every websocket and wait (up to `timeout_s`) for their sessions to
        end, on shutdown: aiohttp no longer knows the connections taken from it."""
        for transport in list(self.websocket_transports.values()):
            if transport is not None:
                transport.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in a task this server keeps a reference to."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, sid: str) -> None:
        self._ending.discard(sid)
        socket = self.sockets.pop(sid, None)
        if socket is not None and not socket.closed:
            # Queues CLOSE (which also ends a waiting long-poll); fires `disconnect`.
            await socket.close(wait=False, abort=False, reason=self.reason.SERVER_DISCONNECT)
        transport = self.websocket_transports.pop(sid, None)
        if transport is not None:
            transport.close()


class SocketServer(socketio.AsyncServer):
    """`socketio.AsyncServer` with the transport guards of PROTOCOL.md protocol 2:

    - a binary packet (attachments, or any bytes frame) ends its engine.io
      session at once, before anything is buffered;
    - a transport whose Socket.IO connect was refused is closed shortly after
      the CONNECT_ERROR, and one that has not connected within
      `connect_timeout_s` is closed;
    - `expire_at(sid, when)` disconnects a connection when its token expires.

    :param connect_timeout_s: how long a new transport may wait before its connect.
    """

    def __init__(self, *, connect_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connect_timeout_s = connect_timeout_s
        self._timers: dict[str, asyncio.TimerHandle] = {}  # eio sid -> connect deadline
        self._expiries = ExpiryWheel(self.expire)  # sid -> token expiry (+ EXPIRY_GRACE_S)

    def _engineio_server_class(self) -> type[EngineServer]:
        return EngineServer

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> None:
        await super()._handle_eio_connect(eio_sid, environ)
        self._timers[eio_sid] = asyncio.get_running_loop().call_later(
            self.connect_timeout_s, self._connect_overdue, eio_sid
        )

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if self.eio.is_ending(eio_sid):
            return
        if isinstance(data, bytes) or (isinstance(data, str) and data[:1] in BINARY_TYPES):
            log.warning("closing %s: it sent a binary packet (not part of the protocol)", eio_sid)
            await self.eio.end(eio_sid)
            return
        try:
            await super()._handle_eio_message(eio_sid, data)
        except ValueError as exc:  # a packet python-socketio cannot decode (bad JSON)
            await self._refuse_undecodable(eio_sid, data, exc)

    async def _refuse_undecodable(self, eio_sid: str, data: str, exc: ValueError) -> None:
        """An event that asked for an ack gets `invalid_payload`, so its client is not
        left waiting; any other packet that cannot be read ends the session."""
        header = UNDECODABLE_EVENT.match(data)
        if header is None or header["id"] is None:
            log.warning("closing %s: it sent a packet that cannot be decoded (%s)", eio_sid, exc)
            await self.eio.end(eio_sid)
            return
        namespace = (header["namespace"] or "/,")[:-1]
        ack = failure("invalid_payload", "the event's payload is not valid JSON")
        reply = self.packet_class(packet.ACK, namespace=namespace, id=int(header["id"]), data=[ack])
        await self._send_packet(eio_sid, reply)

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        await super()._handle_connect(eio_sid, namespace, data)
        if self.manager.sid_from_eio_sid(eio_sid, namespace or "/") is None:
            await self.eio.end(eio_sid, grace_s=CLOSE_GRACE_S)  # refused: no retries here
            return
        timer = self._timers.pop(eio_sid, None)
        if timer is not None:
            timer.cancel()  # connected in time
        environ = self.environ.get(eio_sid)
        if environ is not None and len(environ) > 1:
            # Connect handlers read only the request; the rest of the WSGI-style
            # environ (a key per header) would be kept as long as the connection.
            self.environ[eio_sid] = {"aiohttp.request": environ["aiohttp.request"]}

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        timer = self._timers.pop(eio_sid, None)
        if timer is not None:
            timer.cancel()
        await super()._handle_eio_disconnect(eio_sid, reason)

    def _connect_overdue(self, eio_sid: str) -> None:
        self._timers.pop(eio_sid, None)
        if self.manager.sid_from_eio_sid(eio_sid, "/") is None:
            self.eio.spawn(self.eio.end(eio_sid))

    def expire_at(self, sid: str, expires_at: float) -> None:
        """Disconnect `sid` when its token expires (`expires_at`, epoch seconds),
        `EXPIRY_GRACE_S` later (up to a second more: one timer serves every
        connection), should no event of it find out first."""
        if math.isfinite(expires_at):
            self._expiries.add(sid, expires_at + EXPIRY_GRACE_S)

    def expire(self, sid: str) -> None:
        """Disconnect `sid` now because its token expired, then close its transport."""
        self._expiries.discard(sid)
        self.eio.spawn(self._disconnect_expired(sid))

    def forget(self, sid: str) -> None:
        """Drop what is kept for a connection that is gone."""
        self._expiries.discard(sid)

    def stop_timers(self) -> None:
        """Stop the shared timers (token expiries, pings) on shutdown."""
        self._expiries.close()
        self.eio.stop_timers()

    async def _disconnect_expired(self, sid: str) -> None:
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            return
        log.info("disconnecting %s: its token expired", sid)
        await self.disconnect(sid)
        await self.eio.end(eio_sid, grace_s=CLOSE_GRACE_S)


def socket_manager(redis_url: str | None) -> DirectDeliveryManager:
    """The Socket.IO client manager: in-process without Redis, else a Redis
    channel per room (`RoomShardedRedisManager`, which closes its connections;
    on a Redis Cluster, sharded channels subscribed on each slot's primary).
    """
    if not redis_url:
        return DirectDeliveryManager()
    connections = RedisConnections(redis_url)
    client = connections.client(SOCKET_MANAGER_REDIS)
    return RoomShardedRedisManager(client, json=json_codec, on_close=connections.aclose)


def create_socket_server(
    *,
    signer: TokenSigner,
    limits: ConnectionLimits,
    redis_url: str | None,
    client_ip: Callable[[web.Request], str | None],
    metrics: Metrics | None = None,
    max_packet: int,
    cors_origins: Callable[[str | None, dict[str, str]], bool] | None,
    connect_timeout_s: float = 5.0,
    websocket_deflate: bool = False,
) -> SocketServer:
    """A `SocketServer` for aiohttp that admits only connections with a valid
    token, within the per-user and per-address connection limits.

    :param redis_url: share rooms through Redis (any number of instances)
        when set, see `socket_manager`.
    :param max_packet: largest incoming packet; a bigger one closes that connection.
    :param cors_origins: decides allowed origins [None: the server's own only].
    :param client_ip: the client's address from the aiohttp request (proxy-aware).
    :param metrics: counts connected sockets [none].
    :param connect_timeout_s: a transport not connected after this long is closed.
    :param websocket_deflate: negotiate permessage-deflate with clients that offer it
        (about 110 KB more per such socket; off by default).
    """
    sio = SocketServer(
        connect_timeout_s=connect_timeout_s,
        async_mode="aiohttp",
        client_manager=socket_manager(redis_url),
        json=json_codec,
        max_http_buffer_size=max_packet,
        websocket_deflate=websocket_deflate,
        cors_allowed_origins=cors_origins,
        logger=False,
        engineio_logger=False,
    )

    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            principal = signer.verify(token)
        except AuthError as exc:
            # The client's connect_error carries {"code", "message"} as its data.
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": "unauthorized", "message": exc.message}
            ) from None
        ip = client_ip(environ["aiohttp.request"])
        refusal = limits.admit(sid, principal.org, principal.user, ip)
        if refusal is not None:
            raise socketio.exceptions.ConnectionRefusedError(
                refusal, {"code": "too_many_connections", "message": refusal}
            )
        await sio.save_session(
            sid,
            {
                "org": principal.org,
                "user": principal.user,
                "ip": ip,
                "expires_at": principal.expires_at,
            },
        )
        await sio.enter_room(sid, user_room(principal.org, principal.user))
        sio.expire_at(sid, principal.expires_at)
        if metrics is not None:
            metrics.socket_connected()

    async def disconnect(sid: str, *reason: Any) -> None:
        if limits.is_admitted(sid) and metrics is not None:
            metrics.socket_disconnected()
        limits.release(sid)
        sio.forget(sid)

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)
    return sio
