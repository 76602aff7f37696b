"""The websocket transport made cheap to keep open (realtime/websocket.py,
realtime/expiries.py): served after the middlewares returned, pings from one
shared timer, a dead client still closed, a light outgoing queue."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest
from aiohttp import web
from engineio import packet as eio_packet
from support import EngineSocket

from leadstream.realtime.expiries import ExpiryWheel
from leadstream.realtime.websocket import PacketQueue
from leadstream.server.http.app import create_app
from leadstream.server.http.appkeys import SIO


async def test_a_websocket_is_served_after_every_middleware_returned(
    settings, serve_app, connect, token
) -> None:
    app = create_app(settings)
    finished: list[tuple[str, int]] = []

    @web.middleware
    async def innermost(request: web.Request, handler) -> web.StreamResponse:
        response = await handler(request)
        finished.append((request.path, response.status))
        return response

    app.middlewares.append(innermost)
    server = await serve_app(app)
    client = await connect(server, token())
    assert (await client.call("leads:subscribe", {}))["ok"]
    # The chain returned the 101 while the connection lives on: no middleware
    # frame stays suspended for it.
    assert finished == [("/socket.io/", 101)]
    assert client.sio.connected
    await client.sio.disconnect()


async def test_pings_come_from_the_shared_timer_and_a_silent_client_is_closed(
    settings, serve_app, token, http: aiohttp.ClientSession
) -> None:
    app = create_app(settings)
    server = await serve_app(app)
    engine = app[SIO].eio
    engine.ping_interval, engine.ping_timeout = 1, 1
    raw = await EngineSocket.open(http, str(server.make_url("/")))
    assert (await raw.connect(token())).startswith("40{")
    async with asyncio.timeout(20):
        for _ in range(2):  # a ping, answered; the next comes after the pong
            assert (await raw.ws.receive_str()) == "2"
            await raw.ws.send_str("3")
        assert (await raw.ws.receive_str()) == "2"  # not answered now
        await raw.wait_closed()  # a ping timeout later, the server closes the websocket
    async with asyncio.timeout(10):
        while engine.sockets:
            await asyncio.sleep(0.05)
    assert not app[SIO].manager.rooms.get("/", {}).get(None)  # gone from the rooms too


async def test_the_expiry_wheel_calls_each_due_key_once_and_not_discarded_ones() -> None:
    due: list[str] = []
    all_due = asyncio.Event()

    def on_due(key: str) -> None:
        due.append(key)
        if len(due) == 3:
            all_due.set()

    wheel = ExpiryWheel(on_due, tick_s=0.02)
    wall = time.time()
    wheel.add("late", wall + 0.3)
    wheel.add("early", wall + 0.05)
    wheel.add("gone", wall + 0.1)
    wheel.add("moved", wall + 10)
    wheel.add("moved", wall + 0.15)  # a key added again keeps its latest deadline
    wheel.discard("gone")
    assert len(wheel) == 3
    async with asyncio.timeout(10):
        await all_due.wait()
    assert due == ["early", "moved", "late"]
    assert len(wheel) == 0
    wheel.close()


async def test_the_expiry_wheel_drops_emptied_slots_from_its_heap() -> None:
    wheel = ExpiryWheel(lambda key: None, tick_s=1.0)
    wall = time.time()
    for i in range(1000):  # each key alone in its slot, then gone
        wheel.add(f"k{i}", wall + 3600 + i)
        wheel.discard(f"k{i}")
    assert len(wheel) == 0
    assert len(wheel._order) <= 64 + 1  # not one stale heap entry per slot ever used
    wheel.close()


async def test_packet_queue_keeps_order_and_join_waits_for_task_done() -> None:
    queue = PacketQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("a")
    await queue.put("b")
    assert await getter == "a"
    assert queue.get_nowait() == "b"
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    joined = asyncio.ensure_future(queue.join())
    await asyncio.sleep(0)
    assert not joined.done()  # two items taken, none marked done
    queue.task_done()
    await asyncio.sleep(0)
    assert not joined.done()
    queue.task_done()
    await asyncio.wait_for(joined, 5)
    with pytest.raises(ValueError):
        queue.task_done()


async def test_packet_queue_survives_a_cancelled_get_and_overlapping_getters() -> None:
    queue = PacketQueue()
    cancelled = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())  # an overlapping long-poll
    await asyncio.sleep(0)
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert sorted(await asyncio.wait_for(asyncio.gather(first, second), 5)) == [1, 2]
    assert queue.empty() and queue.qsize() == 0


async def test_room_emits_written_directly_keep_order_with_queued_packets(
    settings, serve_app, token, http: aiohttp.ClientSession
) -> None:
    """An emit writes its frame straight to an idle websocket, and queues it
    behind packets already waiting for that socket: the client sees one order."""
    app = create_app(settings)
    server = await serve_app(app)
    sio = app[SIO]
    raw = await EngineSocket.open(http, str(server.make_url("/")))
    opened = await raw.connect(token())
    sid = orjson.loads(opened[2:])["sid"]
    eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
    assert eio_sid in sio.eio.direct_writers  # opened as a websocket: written to directly
    socket = sio.eio.sockets[eio_sid]
    direct = queued = 0
    for i in range(300):
        encoded = sio.manager.encode_event("seq", i, "/")
        if i % 7 == 0:  # something already waits in the queue (an ack, a ping)
            socket.queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, encoded))
            continue
        waiting = socket.queue.qsize()
        assert sio.manager.deliver("/", sid, None, encoded) == 1
        if socket.queue.qsize() == waiting:
            direct += 1
        else:
            queued += 1  # behind what waits: written by the socket's writer
        if i % 50 == 0:
            await asyncio.sleep(0.01)  # the writer drains the queue now and then
    received = []
    async with asyncio.timeout(10):
        while len(received) < 300:
            text = await raw.next_text()
            if text.startswith('42["seq"'):
                received.append(orjson.loads(text[2:])[1])
    assert received == list(range(300))
    assert direct and queued  # both paths ran, interleaved
