"""The Socket.IO server: transport settings, the Redis manager when
configured, connection auth, and the transport's own guards (binary packets,
refused or overdue connects, token expiry). Event handlers live in `chat` and
`feed`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import engineio
import socketio
from aiohttp import web
from engineio.async_drivers import aiohttp as engineio_aiohttp
from socketio import packet

from leadstream.realtime import json_codec
from leadstream.realtime.acks import failure
from leadstream.realtime.delivery import DirectDeliveryManager
from leadstream.realtime.limits import ConnectionLimits
from leadstream.realtime.redis_manager import RoomShardedRedisManager
from leadstream.realtime.rooms import user_room
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


class _TrackedWebSocket(engineio_aiohttp.WebSocket):
    """engine.io's aiohttp websocket, known by session id while it is open so
    the server can cut its TCP connection (engine.io alone waits for the client)."""

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        sid = self.handler.__self__.sid  # the engine.io socket this websocket serves
        requests = self.server.websocket_requests
        requests[sid] = environ["aiohttp.request"]
        try:
            return await super().__call__(environ)
        finally:
            requests.pop(sid, None)


class EngineServer(engineio.AsyncServer):
    """The engine.io server, able to end a session on the server's say-so:
    its packets are ignored from then on and its transport is closed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._async = {**self._async, "websocket": _TrackedWebSocket}
        self.websocket_requests: dict[str, web.Request] = {}
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
        request = self.websocket_requests.pop(sid, None)
        if request is not None and request.transport is not None:
            request.transport.close()


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
        self._expiries: dict[str, asyncio.TimerHandle] = {}  # sid -> token expiry

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
        `EXPIRY_GRACE_S` later, should no event of it find out first."""
        if math.isfinite(expires_at):
            delay = max(0.0, expires_at - time.time()) + EXPIRY_GRACE_S
            self._expiries[sid] = asyncio.get_running_loop().call_later(delay, self.expire, sid)

    def expire(self, sid: str) -> None:
        """Disconnect `sid` now because its token expired, then close its transport."""
        self._expiries.pop(sid, None)
        self.eio.spawn(self._disconnect_expired(sid))

    def forget(self, sid: str) -> None:
        """Drop what is kept for a connection that is gone."""
        timer = self._expiries.pop(sid, None)
        if timer is not None:
            timer.cancel()

    async def _disconnect_expired(self, sid: str) -> None:
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            return
        log.info("disconnecting %s: its token expired", sid)
        await self.disconnect(sid)
        await self.eio.end(eio_sid, grace_s=CLOSE_GRACE_S)


def socket_manager(redis_url: str | None) -> DirectDeliveryManager:
    """The Socket.IO client manager: in-process without Redis, else a Redis
    channel per room (`RoomShardedRedisManager`, which closes its connections).

    :raises ValueError: for a Redis Cluster URL (not supported by the manager yet).
    """
    if not redis_url:
        return DirectDeliveryManager()
    connections = RedisConnections(redis_url)
    if connections.is_cluster:
        raise ValueError("a Redis Cluster needs per-node sharded subscriptions, not built yet")
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
    """
    sio = SocketServer(
        connect_timeout_s=connect_timeout_s,
        async_mode="aiohttp",
        client_manager=socket_manager(redis_url),
        json=json_codec,
        max_http_buffer_size=max_packet,
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
