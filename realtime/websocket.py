"""The websocket transport of engine.io, made cheap to keep open.

An idle websocket costs what stays alive while it waits. With python-engineio
on aiohttp that was, per connection: the frames of every HTTP middleware and
of engine.io's request handling (the websocket is served inside the request
handler), a task per read (`asyncio.wait_for` around a task), a task per
write wait (`poll`, another `wait_for`), a sleeping task per ping, an
`asyncio.Queue` (three deques and an event, ~3 KB) and a copy of the
context per task. Here:

- `ServedAfterHandlerResponse` serves the connection from `write_eof`, which
  aiohttp calls once the handler and every middleware have returned; there
  `TrackedWebSocket.take_over` takes the connection from aiohttp altogether
  (`websocket_frames.WebSocketFrames` reads and writes its frames), unless
  it negotiated per-message deflate, which stays on aiohttp;
- `TrackedWebSocket._session` is engine.io's websocket loop for a transport
  opened as a websocket: the reader in one task, one writer task (sharing one
  empty context), no task per wait;
- `PingWheel` sends every socket's next ping from one timer (`ExpiryWheel`)
  and ends the transport of a socket whose pong is overdue (what engine.io's
  loop timeouts did);
- `PacketQueue` is the socket's outgoing queue: a list and its consumer's future;
- `TrackedWebSocket.write_now` writes a ready frame straight to the
  transport when nothing is queued or being sent for the socket, so a room
  emit costs one `transport.write` per recipient (`text_frame` builds the
  frame once per emit) instead of waking a writer task per recipient.

A transport upgraded from long-polling keeps engine.io's own loop (our clients
open websockets directly).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web
from engineio import exceptions, packet
from engineio.async_drivers import aiohttp as engineio_aiohttp
from engineio.async_socket import AsyncSocket

from leadstream.realtime.expiries import ExpiryWheel
from leadstream.realtime.websocket_frames import OP_TEXT, WebSocketFrames, frame

if TYPE_CHECKING:
    from leadstream.realtime.server import EngineServer

log = logging.getLogger(__name__)
DATA_FRAMES = (WSMsgType.TEXT, WSMsgType.BINARY)


def text_frame(payload: bytes) -> bytes:
    """A server's websocket frame (unmasked, uncompressed, RFC 6455 5.2)
    carrying `payload` as one text message: the same bytes go to every
    recipient of an emit."""
    return frame(OP_TEXT, payload)


class ServedAfterHandlerResponse(web.WebSocketResponse):
    """A websocket served from `write_eof`, after the request handler and every
    middleware returned, so none of their frames stay suspended for the
    connection's lifetime (seven middlewares and engine.io's request handling
    kept ~4 KB per socket)."""

    served: TrackedWebSocket | None = None

    async def write_eof(self) -> None:  # type: ignore[override]
        served, self.served = self.served, None
        if served is not None:
            if served.take_over():
                return  # the connection is no longer aiohttp's: nothing of it to end here
            await served.serve()
        await super().write_eof()


class TrackedWebSocket(engineio_aiohttp.WebSocket):
    """engine.io's aiohttp websocket, served after the request handler
    returned and known by session id while it is open, so the server can cut
    its TCP connection (engine.io alone waits for the client).

    A socket opened as a websocket without per-message deflate (every client
    of ours) leaves aiohttp right after the upgrade (`take_over`): its
    frames are read and written by `WebSocketFrames`, and its session runs
    in a task of its own.
    """

    server: EngineServer
    # True while the writer holds packets it took from the queue: a frame
    # written now would overtake them.
    sending = False
    # The connection's frames once aiohttp let go of it (`take_over`).
    taken: WebSocketFrames | None = None

    def write_now(self, frame: bytes) -> bool:
        """Write `frame` (from `text_frame`) to the client at once if that keeps
        the socket's order: nothing queued, nothing being sent, nothing in the
        transport's buffer, no per-message deflate. False: queue it instead."""
        if self.sending or not self.socket.queue.empty():
            return False
        transport = self.transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size():
            return False
        if self.taken is None and (self._sock.closed or self._sock.compress):
            return False
        transport.write(frame)
        return True

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        self.request: web.Request = environ["aiohttp.request"]
        response = ServedAfterHandlerResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=self.server.websocket_deflate
        )
        await response.prepare(self.request)
        self.transport: asyncio.Transport | None = self.request.transport
        self._sock = response
        response.served = self
        return response

    def take_over(self) -> bool:
        """Take the connection from aiohttp (see `websocket_frames`) and serve
        the engine.io socket in a task; False when it stays aiohttp's: an
        upgrade from long-polling, per-message deflate, or already gone.

        The client speaks only after the engine.io OPEN packet, which the
        writer started here sends, so nothing it sent is left in aiohttp's
        reader."""
        socket: AsyncSocket = self.handler.__self__
        transport = self.transport
        if socket.connected or self._sock.compress or transport is None or transport.is_closing():
            return False
        frames = WebSocketFrames(
            transport,
            max_message=self.server.max_http_buffer_size,
            pace_end=self.server.session_ends.add,
        )
        transport.set_protocol(frames)
        connection = self.request.protocol  # aiohttp's handler of this connection:
        connection.transport = None  # it must not close it...
        connection.connection_lost(None)  # ...and forgets it, as if it had ended
        self.taken = frames
        self.server.spawn(self._session(socket))
        return True

    async def serve(self) -> None:
        """Serve the engine.io socket on aiohttp until either side closes; an
        upgrade from long-polling keeps engine.io's own loop."""
        socket: AsyncSocket = self.handler.__self__  # the engine.io socket this websocket serves
        if not socket.connected:
            await self._session(socket)
            return
        self.server.websocket_transports[socket.sid] = self.transport
        try:
            await self.handler(self)
        finally:
            self._forget(socket.sid)

    async def send(self, message: str | bytes) -> None:
        if self.taken is None:
            await super().send(message)
            return
        self.taken.send(message)
        await self.taken.drain()

    async def close(self) -> None:
        if self.taken is None:
            await super().close()
            return
        self.taken.close()

    async def _receive(self) -> str | bytes | None:
        """The client's next message; None once it closed or went away."""
        if self.taken is not None:
            return await self.taken.receive()
        message = await self._sock.receive()
        return message.data if message.type in DATA_FRAMES else None

    async def _session(self, socket: AsyncSocket) -> None:
        """engine.io's `_websocket_handler` for a transport opened as a
        websocket (same packets and close reasons) without a task per wait:
        the reader in this task, one writer task."""
        server = self.server
        sid = socket.sid
        server.websocket_transports[sid] = self.transport
        try:
            self.socket = socket
            server.direct_writers[sid] = self
            socket.connected = socket.upgraded = True
            # One empty context for every writer: it reads no context variable
            # (a task otherwise gets a copy of the current one).
            writer = asyncio.get_running_loop().create_task(
                _write(socket, self), context=server.writer_context
            )
            limit = server.max_http_buffer_size
            try:
                while True:  # the reader
                    data = await self._receive()
                    if data is None:
                        break  # closed by the client, or the connection is gone
                    if len(data) > limit:
                        break  # refused before this by the frame reader; engine.io's own check
                    try:
                        await socket.receive(packet.Packet(encoded_packet=data))
                    except exceptions.UnknownPacketError:
                        pass  # engine.io ignores a packet type it does not know
                    except exceptions.SocketIsClosedError:
                        break
                    except Exception:
                        log.exception("engine.io session %s: a packet failed", sid)
            finally:  # also when the session is cancelled (shutdown)
                socket.queue.put_nowait(None)  # ends the writer
                try:
                    await writer
                finally:
                    reason = server.reason.TRANSPORT_CLOSE
                    await socket.close(wait=False, abort=True, reason=reason)
        finally:
            self._forget(sid)

    def _forget(self, sid: str) -> None:
        """The session's connection is over: drop it from the server's maps."""
        server = self.server
        server.websocket_transports.pop(sid, None)
        server.direct_writers.pop(sid, None)
        if sid in server.sockets and server.sockets[sid].closed:
            del server.sockets[sid]  # what engine.io does once its handler returns


async def _write(socket: AsyncSocket, ws: TrackedWebSocket) -> None:
    """Send what is queued for `socket` until None is queued or a CLOSE was
    sent, then close the websocket."""
    queue = socket.queue
    done = False
    while not done:
        pkt = await queue.get()
        ws.sending = True
        queue.task_done()
        batch = [pkt]
        while pkt is not None and not queue.empty():
            pkt = queue.get_nowait()
            queue.task_done()
            batch.append(pkt)
        try:
            for pkt in batch:
                if pkt is None:
                    done = True
                    break
                await ws.send(pkt.encode())
                done = pkt.packet_type == packet.CLOSE
        except (OSError, RuntimeError) as exc:  # the transport is gone
            log.debug("engine.io session %s: send failed (%s)", socket.sid, exc)
            break
        finally:
            ws.sending = done  # a closed writer keeps refusing direct writes
    await ws.close()


class PacketQueue:
    """An unbounded queue with the part of `asyncio.Queue`'s API engine.io
    uses (`put`, `put_nowait`, `get`, `get_nowait`, `empty`, `qsize`,
    `task_done`, `join`), made of a list and the futures of whoever waits."""

    __slots__ = ("_drained", "_items", "_more_waiters", "_unfinished", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None  # the consumer (the writer)
        self._more_waiters: list[asyncio.Future[None]] | None = None  # overlapping polls
        self._drained: asyncio.Future[None] | None = None
        self._unfinished = 0

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._unfinished += 1
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        more, self._more_waiters = self._more_waiters, None
        for waiter in more or ():  # each wakes and looks again
            if not waiter.done():
                waiter.set_result(None)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiter is None:
                self._waiter = waiter
            else:
                self._more_waiters = [*(self._more_waiters or ()), waiter]
            try:
                await waiter
            finally:  # cancelled before anything came: no longer waiting
                if self._waiter is waiter:
                    self._waiter = None
                elif self._more_waiters and waiter in self._more_waiters:
                    self._more_waiters.remove(waiter)
        return self._items.pop(0)

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._drained is not None:
            drained, self._drained = self._drained, None
            if not drained.done():
                drained.set_result(None)

    async def join(self) -> None:
        if self._unfinished:
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drained)


class PingWheel:
    """Sends each socket's next ping `ping_interval` after its last pong, and
    ends the transport of one whose pong is `ping_timeout` overdue, for every
    socket from one timer (engine.io starts a sleeping task per socket, and
    its transport loops time out on their own).

    :param server: the engine.io server whose sockets are pinged.
    """

    def __init__(self, server: EngineServer) -> None:
        self.server = server
        self._due = ExpiryWheel(self._due_now)

    def schedule(self, sid: str) -> None:
        """Ping `sid` one ping interval from now (it answered the last one)."""
        self._due.add(sid, time.time() + self.server.ping_interval)

    def close(self) -> None:
        self._due.close()

    def _due_now(self, sid: str) -> None:
        server = self.server
        socket = server.sockets.get(sid)
        if socket is not None and not (socket.closing or socket.closed or socket.last_ping):
            socket.last_ping = time.time()
            socket.queue.put_nowait(packet.Packet(packet.PING))  # an unbounded queue: never waits
            self._due.add(sid, socket.last_ping + server.ping_timeout + self._due.tick_s)
            return
        # No pong in time, or closed without its transport knowing (engine.io's
        # ping check closes the socket but queues nothing): end the transport.
        if socket is not None and socket.upgraded:
            socket.queue.put_nowait(None)  # ends its writer, which closes the websocket
        transport = server.websocket_transports.get(sid)
        if socket is None and transport is not None:
            transport.close()


def is_ping_of_a_socket(target: Any) -> bool:
    """Whether `target` is an engine.io socket's `_send_ping` (a ping to schedule)."""
    return getattr(target, "__func__", None) is AsyncSocket._send_ping
