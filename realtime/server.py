"""The Socket.IO server: transport settings, the Redis manager when
configured, and connection auth. Event handlers live in `chat` and `feed`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import socketio
from aiohttp import web

from leadstream.realtime import json_codec
from leadstream.realtime.limits import ConnectionLimits
from leadstream.realtime.rooms import user_room
from leadstream.server.auth import AuthError, TokenSigner

if TYPE_CHECKING:
    from leadstream.server.metrics import Metrics

log = logging.getLogger(__name__)


# Fail fast when Redis is away: emits still reach this instance's clients
# (python-socketio delivers locally before publishing), others catch up
# through the change log.
REDIS_OPTIONS = {"socket_connect_timeout": 1.0, "socket_timeout": 2.0}


def create_socket_server(
    *,
    signer: TokenSigner,
    limits: ConnectionLimits,
    redis_url: str | None,
    client_ip: Callable[[web.Request], str | None],
    metrics: Metrics | None = None,
    max_packet: int,
    cors_origins: Callable[[str | None, dict[str, str]], bool] | None,
) -> socketio.AsyncServer:
    """An `AsyncServer` for aiohttp that admits only connections with a valid
    token, within the per-user connection limit.

    :param redis_url: use `AsyncRedisManager` (any number of instances) when
        set; `redis+sentinel://` URLs are accepted as python-socketio parses them.
    :param max_packet: largest incoming packet; a bigger one closes that connection.
    :param cors_origins: decides allowed origins [None: the server's own only].
    :param client_ip: the client's address from the aiohttp request (proxy-aware).
    :param metrics: counts connected sockets [none].
    """
    manager = None
    if redis_url:
        manager = socketio.AsyncRedisManager(
            redis_url, json=json_codec, redis_options=dict(REDIS_OPTIONS)
        )
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
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
        if not limits.admit(sid, principal.org, principal.user):
            message = f"at most {limits.connections_per_user} connections per user"
            raise socketio.exceptions.ConnectionRefusedError(
                message, {"code": "too_many_connections", "message": message}
            )
        ip = client_ip(environ["aiohttp.request"])
        await sio.save_session(sid, {"org": principal.org, "user": principal.user, "ip": ip})
        await sio.enter_room(sid, user_room(principal.org, principal.user))
        if metrics is not None:
            metrics.socket_connected()

    async def disconnect(sid: str, *reason: Any) -> None:
        if limits.is_admitted(sid) and metrics is not None:
            metrics.socket_disconnected()
        limits.release(sid)

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)
    return sio
