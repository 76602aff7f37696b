"""The load test's client: one subscribed Socket.IO client on a raw
websocket, as cheap per received event as we could make it.

A load generator on the same box as the server takes its CPU from the
server's share, so its cost per event decides what the measurement can show:
at 20,000 sockets each getting a change a second, an aiohttp client
websocket (a reader task woken per message) took about as much CPU as the
server. Here a socket is an `asyncio.Protocol`: `data_received` cuts the
server's frames out of the buffer itself (server frames are never masked),
so a received event costs a callback, a slice and an `orjson.loads`.

Why not a library: wsproto (sans-I/O, well kept) costs ~13 µs per message
against ~1 µs for the slicing below, measured on this machine; the part we
need (one client, text frames, optional permessage-deflate, RFC 6455) is
small and fixed. What the server sends that we do not handle (fragmented
messages, binary frames) ends the socket as an error, so it shows up as
lost events, never as a silent miscount.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Any

import orjson

from leadstream.realtime.websocket_frames import (
    FIN,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    frame,
    payload_length,
)

WS_PATH = "/socket.io/?EIO=4&transport=websocket"
# The title of every lead change the load test writes: `loadtest RUN SENT_AT`.
STAMP = "loadtest"
HANDSHAKE_TIMEOUT_S = 30.0
RSV1 = 0x40  # a compressed message (RFC 7692)
DEFLATE_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 7.2.2: removed by the sender, put back here


@dataclass(slots=True)
class Tally:
    """What one client process's sockets received since `start`."""

    run: str = ""
    latencies: array = field(default_factory=lambda: array("d"))


class FeedSocket(asyncio.Protocol):
    """A Socket.IO client subscribed to its org's lead feed: it answers
    pings, counts the `leads:changes` of the current run (each version once,
    in whatever order versions arrive: with several instances an org's
    changes may cross) and records each one's latency.

    :param deflate: offer permessage-deflate with this window (0: do not).
    """

    def __init__(self, org: str, tally: Tally, deflate: int = 0) -> None:
        self.org = org
        self.tally = tally
        self.deflate = deflate
        self.version = 0  # the feed's version when it subscribed
        self.seen: set[int] = set()  # versions counted in the current run
        self.received = 0
        self.closed = False
        self.error: str | None = None  # why this client ended the connection
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        self._inflater: Any = None  # a zlib decompressor once the server accepted deflate
        # While connecting: the texts received and not yet read, and who waits for one.
        self._inbox: list[bytes] | None = []
        self._waiter: asyncio.Future[None] | None = None

    async def open(
        self, host: str, port: int, token: str, local_address: str | None, *, tls: bool = False
    ) -> None:
        """Connect with `token` (over TLS when `tls`) and subscribe; raises
        ConnectionError when refused."""
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        await loop.create_connection(lambda: self, host, port, local_addr=local, ssl=tls or None)
        assert self._transport is not None
        self._transport.write(self._upgrade_request(host, port))
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            opening = await self._next_text()
            if not opening.startswith(b"0"):
                raise ConnectionError(f"not an Engine.IO open packet: {opening[:60]!r}")
            self.send(b"40" + orjson.dumps({"token": token}))
            answer = await self._next_text()
            if not answer.startswith(b"40"):
                raise ConnectionError(f"connect refused: {answer[:160]!r}")
            self.send(b'421["leads:subscribe",{}]')
            ack = await self._next_text()
            while ack.startswith(b"42"):  # an event overtaking the ack
                ack = await self._next_text()
        if not ack.startswith(b"431"):
            raise ConnectionError(f"subscribe not acknowledged: {ack[:160]!r}")
        body = orjson.loads(ack[3:])[0]
        if not body.get("ok"):
            raise ConnectionError(f"subscribe refused: {body.get('error')}")
        self.version = body.get("version", 0)
        self._inbox = None  # from now on events are counted as they arrive

    @property
    def compressed(self) -> bool:
        """Whether the server accepted permessage-deflate."""
        return self._inflater is not None

    def close(self) -> None:
        """Send a websocket close and let go of the connection."""
        if self._transport is not None and not self._transport.is_closing():
            self._send_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
            self._transport.close()
        self.closed = True

    def send(self, text: bytes) -> None:
        self._send_frame(OP_TEXT, text)

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True  # the changes it did not get are counted as lost
        self._wake()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._upgraded and not self._read_upgrade():
            return
        while len(buffer) >= 2:
            header = payload_length(buffer)  # server frames carry no mask key
            if header is None:
                return
            length, start = header
            first, end = buffer[0], start + length
            if len(buffer) < end:
                return
            payload = bytes(buffer[start:end])
            del buffer[:end]
            self._frame(first, payload)

    # -- inside ------------------------------------------------------------------

    def _frame(self, first: int, payload: bytes) -> None:
        opcode = first & 0x0F
        if opcode == OP_TEXT and first & FIN:
            if first & RSV1 and self._inflater is not None:
                payload = self._inflater.decompress(payload + DEFLATE_TAIL)
            self._text(payload)
        elif opcode == OP_PING:
            self._send_frame(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            self.close()
        elif opcode != OP_PONG:
            self._fail(f"a frame this client does not read (opcode {opcode}, first byte {first})")

    def _text(self, payload: bytes) -> None:
        if payload == b"2":  # Engine.IO ping
            self.send(b"3")
        elif self._inbox is not None:
            self._inbox.append(payload)
            self._wake()
        elif payload.startswith(b'42["leads:changes"'):
            self._count(orjson.loads(payload[2:])[1], time.time())

    def _count(self, event: dict[str, Any], now: float) -> None:
        prefix = f"{STAMP} {self.tally.run} "
        for change in event.get("changes", ()):
            version = change.get("version", 0)
            if version <= self.version or version in self.seen:
                continue  # already seen (a change may come twice around a subscribe)
            self.seen.add(version)
            title = (change.get("lead") or {}).get("title") or ""
            if self.tally.run and title.startswith(prefix):
                self.received += 1
                self.tally.latencies.append(now - float(title.rsplit(" ", 1)[1]))

    async def _next_text(self) -> bytes:
        while True:
            if self._inbox:
                return self._inbox.pop(0)
            if self.closed:
                raise ConnectionError(self.error or "closed during the handshake")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _upgrade_request(self, host: str, port: int) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {WS_PATH} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if self.deflate:  # what aiohttp's client offers for `compress=bits`
            offer = "permessage-deflate; client_max_window_bits"
            if self.deflate < 15:
                offer += f"; server_max_window_bits={self.deflate}"
            lines.append(f"Sec-WebSocket-Extensions: {offer}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _read_upgrade(self) -> bool:
        """Consume the server's answer to the upgrade; False until it is whole."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        status, *headers = head.split("\r\n")
        if status.split(" ", 2)[1:2] != ["101"]:
            self._fail(f"websocket upgrade refused: {status}")
            return False
        self._upgraded = True
        for header in headers:
            name, _, value = header.partition(":")
            if name.strip().lower() == "sec-websocket-extensions" and "permessage-deflate" in value:
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        return True

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        """A client frame: masked (RFC 6455 5.3), never compressed."""
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(frame(opcode, payload, mask=os.urandom(4)))

    def _fail(self, why: str) -> None:
        self.error = why
        if self._transport is not None:
            self._transport.abort()
        self.closed = True
        self._wake()
