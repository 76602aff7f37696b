"""Websockets after aiohttp let go of them (realtime/websocket_frames.py):
raw frames against the running app, as a client written by someone else
might send them, and the pacing of session ends."""

from __future__ import annotations

import asyncio
import base64
import os
import struct

import aiohttp
import pytest
from support import settings_with

from leadstream.pacing import PacedCalls
from leadstream.realtime.websocket_frames import (
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WebSocketFrames,
    unmask,
)
from leadstream.server.http.app import create_app
from leadstream.server.http.appkeys import SIO

WS_PATH = "/socket.io/?EIO=4&transport=websocket"


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, (0x80 if masked else 0) | size)
    elif size < 65536:
        header = struct.pack("!BBH", first, (0x80 if masked else 0) | 126, size)
    else:
        header = struct.pack("!BBQ", first, (0x80 if masked else 0) | 127, size)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + unmask(payload, mask)  # masking and unmasking are the same XOR


class RawWebSocket:
    """A websocket client on a plain TCP stream: frames as bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawWebSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {WS_PATH} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        socket = cls(reader, writer)
        opcode, payload = await socket.next_frame()
        assert opcode == OP_TEXT and payload.startswith(b"0{"), payload  # engine.io OPEN
        return socket

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def next_frame(self) -> tuple[int, bytes]:
        """The server's next frame (opcode, payload); server frames are never masked."""
        async with asyncio.timeout(10):
            first, second = await self.reader.readexactly(2)
            assert not second & 0x80, "a server frame must not be masked"
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(await self.reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await self.reader.readexactly(8), "big")
            return first & 0x0F, await self.reader.readexactly(length)

    async def next_text(self) -> bytes:
        while True:
            opcode, payload = await self.next_frame()
            if opcode == OP_TEXT and payload != b"2":  # engine.io pings are not asked for
                return payload

    async def closed_with(self) -> int:
        """The code of the server's close frame, once the server also ends the connection."""
        opcode, payload = await self.next_frame()
        while opcode != OP_CLOSE:
            opcode, payload = await self.next_frame()
        async with asyncio.timeout(10):
            assert await self.reader.read() == b""  # the server closed the connection
        return int.from_bytes(payload[:2], "big")


MAX_PACKET = 4096


@pytest.fixture
async def app_port(settings, serve_app):
    app = create_app(settings_with(settings, max_packet=MAX_PACKET))
    server = await serve_app(app)
    return app, server.port


async def healthz(port: int) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        return response.status


async def test_a_fragmented_connect_is_reassembled_and_pings_get_pongs(app_port, token):
    app, port = app_port
    socket = await RawWebSocket.open(port)
    connect = b'40{"token":"' + token().encode() + b'"}'
    socket.send(client_frame(OP_PING, b"are you there"))
    socket.send(client_frame(OP_TEXT, connect[:5], fin=False))
    socket.send(client_frame(OP_CONTINUATION, connect[5:12], fin=False))
    socket.send(client_frame(OP_PING, b"between fragments"))  # allowed mid-message
    socket.send(client_frame(OP_CONTINUATION, connect[12:]))
    assert await socket.next_frame() == (OP_PONG, b"are you there")
    assert await socket.next_frame() == (OP_PONG, b"between fragments")
    assert (await socket.next_text()).startswith(b"40{")  # connected
    socket.send(client_frame(OP_TEXT, b'421["leads:subscribe",{}]'))
    assert (await socket.next_text()).startswith(b'431[{"ok":true')
    # The session was taken from aiohttp, and written to directly.
    engine = app[SIO].eio
    (sid,) = engine.direct_writers
    assert engine.direct_writers[sid].taken is not None
    socket.send(client_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
    assert await socket.closed_with() == 1000
    async with asyncio.timeout(10):
        while engine.sockets or engine.direct_writers:
            await asyncio.sleep(0.02)  # the session ended with its connection


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([client_frame(OP_TEXT, b"40", masked=False)], 1002),  # clients must mask
        ([bytes((0xC1, 0x80)) + os.urandom(4)], 1002),  # an extension bit nobody agreed to
        ([client_frame(OP_CONTINUATION, b"x")], 1002),  # continuing nothing
        ([client_frame(OP_PING, b"x" * 126)], 1002),  # control frames hold 125 bytes at most
        ([client_frame(OP_TEXT, b"4", fin=False), client_frame(OP_TEXT, b"0")], 1002),
        ([client_frame(0x3, b"")], 1002),  # a reserved opcode
        ([client_frame(OP_TEXT, b"\xff\xfe")], 1007),  # text that is not UTF-8
        ([client_frame(OP_TEXT, b"4" * (MAX_PACKET + 1))], 1009),  # over LEADSTREAM_MAX_PACKET
        (
            [
                client_frame(OP_TEXT, b"4", fin=False),
                client_frame(OP_CONTINUATION, b"2" * MAX_PACKET),
            ],
            1009,
        ),
    ],
)
async def test_a_broken_frame_closes_that_connection_only_with_the_rfc_code(
    app_port, token, frames, code
):
    _, port = app_port
    bystander = await RawWebSocket.open(port)
    bystander.send(client_frame(OP_TEXT, b'40{"token":"' + token().encode() + b'"}'))
    assert (await bystander.next_text()).startswith(b"40{")
    socket = await RawWebSocket.open(port)
    for data in frames:
        socket.send(data)
    assert await socket.closed_with() == code
    assert await healthz(port) == 200
    bystander.send(client_frame(OP_TEXT, b'421["leads:subscribe",{}]'))
    assert (await bystander.next_text()).startswith(b'431[{"ok":true')


async def test_a_client_that_does_not_read_its_messages_is_not_read_either(app_port, token):
    """Messages wait for the session at most INBOX_HIGH deep: past that the
    connection is not read (TCP pushes back on the client)."""
    _, port = app_port
    socket = await RawWebSocket.open(port)
    socket.send(client_frame(OP_TEXT, b'40{"token":"' + token().encode() + b'"}'))
    assert (await socket.next_text()).startswith(b"40{")
    for _ in range(500):  # pongs nobody asked for: read and dropped by engine.io
        socket.send(client_frame(OP_TEXT, b"3"))
    await socket.writer.drain()
    socket.send(client_frame(OP_TEXT, b'421["leads:subscribe",{}]'))
    assert (await socket.next_text()).startswith(b'431[{"ok":true')  # all of it was read, in order


async def test_clients_that_leave_without_a_close_frame_are_closed_and_their_sessions_end(
    app_port, token
):
    """A client that only shuts its side (a killed process, a dropped
    balancer) gets its connection closed by the server, and its session ends."""
    app, port = app_port
    engine = app[SIO].eio
    leaving = [await RawWebSocket.open(port) for _ in range(20)]
    for socket in leaving:
        socket.send(client_frame(OP_TEXT, b'40{"token":"' + token().encode() + b'"}'))
        assert (await socket.next_text()).startswith(b"40{")
    staying = await RawWebSocket.open(port)
    staying.send(client_frame(OP_TEXT, b'40{"token":"' + token(user="bob").encode() + b'"}'))
    assert (await staying.next_text()).startswith(b"40{")
    assert len(engine.sockets) == 21
    for socket in leaving:
        socket.writer.write_eof()
    for socket in leaving:
        async with asyncio.timeout(10):
            while await socket.reader.read(65536):  # pings in flight, then the end
                pass
    async with asyncio.timeout(10):
        while len(engine.sockets) > 1 or len(engine.direct_writers) > 1:
            await asyncio.sleep(0.02)
    assert await healthz(port) == 200
    staying.send(client_frame(OP_TEXT, b'421["leads:subscribe",{}]'))
    assert (await staying.next_text()).startswith(b'431[{"ok":true')


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closes = 0

    def close(self) -> None:
        self.closes += 1

    def is_closing(self) -> bool:
        return self.closes > 0


async def test_an_end_of_file_closes_the_transport_in_the_paced_turn_not_at_once():
    """10,000 clients dropped at once must not mean 10,000 closes (each a
    system call that sends the last segment) in one turn of the loop."""
    paced = PacedCalls(per_turn=2)
    transports = [RecordingTransport() for _ in range(5)]
    connections = [
        WebSocketFrames(transport, max_message=MAX_PACKET, pace_end=paced.add)
        for transport in transports
    ]
    for connection in connections:
        assert connection.eof_received() is True  # asyncio: keep the transport open for now
    assert [t.closes for t in transports] == [0, 0, 0, 0, 0]
    await asyncio.sleep(0)
    assert [t.closes for t in transports] == [1, 1, 0, 0, 0]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [t.closes for t in transports] == [1, 1, 1, 1, 1]
    assert all([await c.receive() is None for c in connections])  # the readers were told


async def test_session_ends_are_paced_per_loop_turn():
    paced = PacedCalls(per_turn=3)
    done: list[int] = []
    for index in range(8):
        paced.add(lambda index=index: done.append(index))
    assert done == [] and len(paced) == 8  # nothing in the turn that added them
    await asyncio.sleep(0)
    assert done == [0, 1, 2]
    await asyncio.sleep(0)
    assert done == [0, 1, 2, 3, 4, 5]
    await asyncio.sleep(0)
    assert done == list(range(8)) and len(paced) == 0
    paced.add(lambda: done.append(8))
    await asyncio.sleep(0)
    assert done[-1] == 8


def test_unmask_is_the_rfc_xor():
    mask = bytes((0x37, 0xFA, 0x21, 0x3D))
    # RFC 6455 5.7: "Hello" masked with 37 fa 21 3d.
    assert unmask(bytes((0x7F, 0x9F, 0x4D, 0x51, 0x58)), mask) == b"Hello"
    assert unmask(b"", mask) == b""
    assert unmask(unmask(b"x" * 1001, mask), mask) == b"x" * 1001
