"""The server side of a websocket once aiohttp has let go of its connection:
RFC 6455 frames over an `asyncio.Protocol`, without extensions.

Why: a connection served by aiohttp keeps, for its whole life, a request
handler, two tasks (the connection's and the request's), the response and
its reader and writer. Ending it walks all of them: ~100 µs per socket, so
10,000 clients dropping at once kept a bare aiohttp websocket server from
answering for 0.9-1.4 s (`python bench/disconnect_floor.py`), against
~0.1 s for a bare `asyncio.Protocol` server. After the upgrade,
`realtime/websocket.py` hands the transport to a `WebSocketFrames` (and
aiohttp forgets it), so an ending connection costs what asyncio's does.

What it does: unmask and reassemble the client's frames (text, binary,
fragmented up to `max_message` bytes), answer pings, answer a close with a
close, refuse a protocol error with the RFC's close code, write the
server's frames (unmasked) with flow control, and pause reading while
`INBOX_HIGH` messages wait to be read. Per-message deflate is not spoken:
a connection that negotiated it stays on aiohttp.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

# A server's frame header: FIN and the opcode.
FIN = 0x80
OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
# Close codes (RFC 6455 7.4.1).
NORMAL, PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1000, 1002, 1007, 1009
# Messages waiting for the reader beyond which the client is not read.
INBOX_HIGH = 64


def frame(opcode: int, payload: bytes, *, mask: bytes | None = None) -> bytes:
    """A whole frame: unmasked (what a server sends), or masked with the
    4-byte `mask` (what a client sends, RFC 6455 5.3)."""
    size = len(payload)
    masked = 0x80 if mask is not None else 0
    if size < 126:
        header = struct.pack("!BB", FIN | opcode, masked | size)
    elif size < 65536:
        header = struct.pack("!BBH", FIN | opcode, masked | 126, size)
    else:
        header = struct.pack("!BBQ", FIN | opcode, masked | 127, size)
    if mask is None:
        return header + payload
    return header + mask + unmask(payload, mask)  # masking is the same XOR


def payload_length(buffer: bytearray) -> tuple[int, int] | None:
    """(payload length, bytes of the header before the mask key) of the frame
    at the start of `buffer` (RFC 6455 5.2); None until those bytes are there."""
    length = buffer[1] & 0x7F
    if length == 126:
        return (int.from_bytes(buffer[2:4], "big"), 4) if len(buffer) >= 4 else None
    if length == 127:
        return (int.from_bytes(buffer[2:10], "big"), 10) if len(buffer) >= 10 else None
    return length, 2


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR `payload` with the 4-byte `mask` repeated (RFC 6455 5.3)."""
    size = len(payload)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little"
    )


class WebSocketFrames(asyncio.Protocol):
    """One websocket connection, frames in and out.

    :param transport: the connection, already upgraded.
    :param max_message: the largest message (all its fragments) a client may send.
    :param pace_end: given the call that closes the transport and tells the
        reader the connection ended, makes it later (`pacing.PacedCalls.add`)
        [now].
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        *,
        max_message: int,
        pace_end: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.transport = transport
        self.max_message = max_message
        self._pace_end = pace_end
        self.closed = False  # the connection is gone, or going
        self._buffer = bytearray()
        self._inbox: list[str | bytes] = []
        self._ended = False  # nothing more will come: `receive` answers None once drained
        self._waiter: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self._fragmented_opcode: int | None = None
        self._paused_reading = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._paused_writing = False

    # -- what the session uses ---------------------------------------------------

    async def receive(self) -> str | bytes | None:
        """The next message (text as str, binary as bytes); None once the
        connection has ended."""
        while not self._inbox:
            if self._ended:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._inbox.pop(0)
        if self._paused_reading and len(self._inbox) < INBOX_HIGH // 2:
            self._paused_reading = False
            if not self.transport.is_closing():
                self.transport.resume_reading()
        return message

    def send(self, message: str | bytes) -> None:
        """Queue `message` on the transport (see `drain`)."""
        if isinstance(message, str):
            self.write(frame(OP_TEXT, message.encode()))
        else:
            self.write(frame(OP_BINARY, message))

    def write(self, data: bytes) -> None:
        """Write ready frame bytes, unless the connection is going."""
        if not self.closed and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport's buffer is over its high-water mark."""
        if self._paused_writing and not self.closed:
            if self._drain_waiter is None:
                self._drain_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drain_waiter)

    def close(self, code: int = NORMAL) -> None:
        """Send a close frame and close the connection (what is buffered is sent first)."""
        if not self.closed and not self.transport.is_closing():
            self.transport.write(frame(OP_CLOSE, code.to_bytes(2, "big")))
        self.closed = True
        self.transport.close()

    # -- asyncio.Protocol ----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 2 and not self.closed:
            first, opcode = buffer[0], buffer[0] & 0x0F
            if first & 0x70 or not buffer[1] & 0x80:  # an extension bit, or an unmasked frame
                self.close(PROTOCOL_ERROR)
                return
            header = payload_length(buffer)
            if header is None:
                return
            length, start = header
            if opcode >= OP_CLOSE and (length > 125 or not first & FIN):
                self.close(PROTOCOL_ERROR)
                return
            if length > self.max_message:
                self.close(TOO_BIG)  # refused before it is buffered
                return
            end = start + 4 + length
            if len(buffer) < end:
                return
            payload = unmask(bytes(buffer[start + 4 : end]), bytes(buffer[start : start + 4]))
            del buffer[:end]
            self._frame(opcode, bool(first & FIN), payload)

    def eof_received(self) -> bool:
        """The client closed its side. The transport stays open until the
        paced end closes it: closing a socket is a system call that sends
        the last segment, and 10,000 clients dropped at once would make
        10,000 of them in one turn of the loop."""
        self.closed = True
        self._end()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._end()
        drain, self._drain_waiter = self._drain_waiter, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        drain, self._drain_waiter = self._drain_waiter, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- inside -----------------------------------------------------------------------

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == OP_PING:
            self.write(frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            pass
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NORMAL
            self.close(code if 1000 <= code < 5000 else PROTOCOL_ERROR)
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._fragmented_opcode is not None:  # a new message inside another
                self.close(PROTOCOL_ERROR)
            elif fin:
                self._deliver(opcode, payload)
            else:
                self._fragmented_opcode, self._fragments = opcode, [payload]
        elif opcode == OP_CONTINUATION and self._fragmented_opcode is not None:
            self._fragments.append(payload)
            if sum(len(part) for part in self._fragments) > self.max_message:
                self.close(TOO_BIG)
            elif fin:
                opcode, self._fragmented_opcode = self._fragmented_opcode, None
                parts, self._fragments = self._fragments, []
                self._deliver(opcode, b"".join(parts))
        else:  # a continuation of nothing, or an opcode RFC 6455 reserves
            self.close(PROTOCOL_ERROR)

    def _deliver(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            try:
                message: str | bytes = payload.decode()
            except UnicodeDecodeError:
                self.close(INVALID_DATA)
                return
        else:
            message = payload
        self._inbox.append(message)
        if len(self._inbox) >= INBOX_HIGH and not self._paused_reading:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._pace_end is None:
            self._finish()
        else:
            self._pace_end(self._finish)

    def _finish(self) -> None:
        """Close the transport (after an end of file it is still open) and
        tell the reader the connection ended."""
        self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
