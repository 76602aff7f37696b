"""The Socket.IO client managers: room bookkeeping that matches
python-socketio's, delivery to local members, a Redis channel per room that
an instance subscribes to only while it hosts members of the room (checked
on a real redis-server), and many sockets leaving at once."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import socketio
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio.cluster import RedisCluster
from support import EngineSocket, EventLog, connect_client, eventually, settings_with

from leadstream.realtime import json_codec
from leadstream.realtime.delivery import DirectDeliveryManager
from leadstream.realtime.redis_manager import RoomShardedRedisManager
from leadstream.server.http.appkeys import SIO

CONTROL = "leadstream:sio#control"


def room_channel(room: str) -> str:
    return f"leadstream:sio#/#{room}#"


@pytest.fixture
async def redis_client(redis_server):
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


# -- room bookkeeping -------------------------------------------------------


class RecordingManager(DirectDeliveryManager):
    def __init__(self) -> None:
        super().__init__()
        self.changes: list[tuple[str, str]] = []

    def room_populated(self, namespace: str, room: str) -> None:
        self.changes.append(("populated", room))

    def room_emptied(self, namespace: str, room: str) -> None:
        self.changes.append(("emptied", room))


async def assert_rooms_reach_only_their_members(one, two, writer, rooms, logs) -> None:
    """`rooms` (red, blue): red's member is on instance one, blue's on two.
    Emits from the instance without the member, from the write-only manager
    and to the whole namespace reach exactly the members they are for."""
    (red, blue), (red_log, blue_log) = rooms, logs
    await two.sio.emit("news", {"to": "red"}, to=red)  # two hosts no red member
    await writer.emit("news", {"to": "blue", "from": "writer"}, to=blue)
    await one.sio.emit("news", {"to": "all"})  # the whole namespace: control channel
    assert await red_log.wait_for("news", lambda d: d["to"] == "all")
    assert await red_log.wait_for("news", lambda d: d["to"] == "red")
    assert await blue_log.wait_for("news", lambda d: d.get("from") == "writer")
    assert await blue_log.wait_for("news", lambda d: d["to"] == "all")
    assert not [d for d in blue_log.of("news") if d["to"] == "red"]


async def disconnect_from_another_instance(instance, client: socketio.AsyncClient) -> None:
    """`instance` disconnects `client`, a client of another instance."""
    gone = asyncio.Event()
    client.on("disconnect", lambda *_: gone.set())
    await instance.sio.disconnect(client.get_sid())
    async with asyncio.timeout(10):
        await gone.wait()


def managed(manager: socketio.AsyncManager) -> socketio.AsyncManager:
    socketio.AsyncServer(client_manager=manager, async_mode="aiohttp")
    return manager


def snapshot(manager: socketio.AsyncManager, sids: list[str]) -> dict[Any, Any]:
    """The manager's rooms and each sid's rooms, with sids replaced by their
    connection order (the two managers draw different random sids)."""
    name = {sid: f"#{n}" for n, sid in enumerate(sids)}
    rooms = {
        room if room is None else name.get(room, room): sorted(name[sid] for sid in members)
        for room, members in manager.rooms.get("/", {}).items()
    }
    joined = {
        name[sid]: sorted(str(name.get(r, r)) for r in manager.get_rooms(sid, "/"))
        for sid in sids
        if manager.is_connected(sid, "/")
    }
    return {"rooms": rooms, "joined": joined}


async def test_room_bookkeeping_matches_python_socketio():
    ours, stock = managed(DirectDeliveryManager()), managed(socketio.AsyncManager())
    rng = random.Random(12)
    sids: dict[int, list[str]] = {id(ours): [], id(stock): []}
    live: list[int] = []
    room_names = [f"org:o{n}" for n in range(4)] + [f"user:o1:u{n}" for n in range(4)]
    for step in range(600):
        action = rng.choice(["connect", "enter", "enter", "leave", "close", "disconnect"])
        if action == "connect" or not live:
            for manager in (ours, stock):
                sids[id(manager)].append(await manager.connect(f"eio{step}", "/"))
            live.append(len(sids[id(ours)]) - 1)
            continue
        index = rng.choice(live)
        room = rng.choice(room_names)
        for manager in (ours, stock):
            sid = sids[id(manager)][index]
            if action == "enter":
                await manager.enter_room(sid, "/", room)
            elif action == "leave":
                await manager.leave_room(sid, "/", room)
            elif action == "close":
                await manager.close_room(room, "/")
            else:
                manager.pre_disconnect(sid, "/")
                await manager.disconnect(sid, "/")
        if action == "disconnect":
            live.remove(index)
        assert snapshot(ours, sids[id(ours)]) == snapshot(stock, sids[id(stock)]), step
    for index in list(live):
        for manager in (ours, stock):
            await manager.disconnect(sids[id(manager)][index], "/")
    assert ours.rooms == stock.rooms == {}
    assert ours._rooms_of == {"/": {}}
    assert ours.pending_connect == {} and ours.pending_disconnect == {}


async def test_first_join_and_last_leave_are_reported_once():
    manager = managed(RecordingManager())
    one = await manager.connect("eio-one", "/")
    two = await manager.connect("eio-two", "/")
    await manager.enter_room(one, "/", "org:acme")
    await manager.enter_room(two, "/", "org:acme")
    await manager.enter_room(two, "/", "user:acme:bob")
    await manager.leave_room(one, "/", "org:acme")
    assert manager.changes == [("populated", "org:acme"), ("populated", "user:acme:bob")]
    manager.pre_disconnect(two, "/")
    await manager.disconnect(two, "/")
    assert sorted(manager.changes[2:]) == [("emptied", "org:acme"), ("emptied", "user:acme:bob")]
    assert manager.get_rooms(two, "/") == []


# -- delivery and subscriptions on a real redis-server ----------------------


async def test_an_instance_subscribes_only_to_rooms_it_hosts(
    settings, redis_server, redis_client, start_server, connect, token, http
):
    shared = settings_with(settings, redis_url=redis_server.url)
    one, two = await start_server(shared), await start_server(shared)
    alice = await connect(one, token("acme", "alice"))
    eve = await connect(two, token("globex", "eve"))
    for client in (alice, eve):
        assert (await client.call("leads:subscribe", {}))["ok"]
    acme = {room_channel("org:acme"), room_channel("user:acme:alice")}
    globex = {room_channel("org:globex"), room_channel("user:globex:eve")}

    # Each room channel has one subscriber: the instance hosting its member.
    assert set(await redis_client.pubsub_shardchannels()) == acme | globex
    counts = dict(await redis_client.pubsub_shardnumsub(*(acme | globex)))
    assert counts == {channel: 1 for channel in acme | globex}
    assert one.app[SIO].manager.subscriptions.channels == acme
    assert two.app[SIO].manager.subscriptions.channels == globex
    # Classic channels: only the control channel (and the stop relay).
    assert set(await redis_client.pubsub_channels()) == {CONTROL, "leadstream:stop"}

    # A change of acme written through instance two, which hosts no acme
    # member, reaches alice on instance one; eve gets nothing.
    created = await http.post(
        str(two.make_url("/api/leads")),
        json={"name": "Routed"},
        headers={"Authorization": f"Bearer {token('acme', 'bob')}"},
    )
    assert created.status == 201
    changes = await alice.log.wait_for("leads:changes")
    assert changes["changes"][0]["lead"]["name"] == "Routed"
    # And a change of globex written through instance one reaches eve on two.
    created = await http.post(
        str(one.make_url("/api/leads")),
        json={"name": "Other"},
        headers={"Authorization": f"Bearer {token('globex', 'mallory')}"},
    )
    assert created.status == 201
    assert (await eve.log.wait_for("leads:changes"))["changes"][0]["lead"]["name"] == "Other"
    assert [e["changes"][0]["lead"]["name"] for e in alice.log.of("leads:changes")] == ["Routed"]

    # The last member leaving a room unsubscribes its instance.
    await alice.call("leads:unsubscribe", {})

    async def org_room_dropped() -> bool:
        return room_channel("org:acme") not in await redis_client.pubsub_shardchannels()

    await eventually(org_room_dropped)
    await alice.sio.disconnect()

    async def only_globex_left() -> bool:
        return set(await redis_client.pubsub_shardchannels()) == globex

    await eventually(only_globex_left)

    async def nothing_subscribed_on_one() -> bool:  # once it reads Redis's confirmation
        return one.app[SIO].manager.subscriptions.channels == frozenset()

    await eventually(nothing_subscribed_on_one)


async def test_a_user_on_two_instances_gets_each_event_once(
    settings, redis_server, start_server, connect, token
):
    shared = settings_with(settings, redis_url=redis_server.url)
    one, two = await start_server(shared), await start_server(shared)
    tab_one = await connect(one, token("acme", "alice"))
    tab_two = await connect(two, token("acme", "alice"))
    done = await tab_one.chat("find 5 CTOs")
    await tab_two.log.wait_for("chat:done", lambda d: d["messageId"] == done["messageId"])
    for tab in (tab_one, tab_two):
        assert len(tab.log.of("chat:done")) == 1
        assert [b["seq"] for b in tab.log.of("leads:batch")] == sorted(
            {b["seq"] for b in tab.log.of("leads:batch")}
        )


# -- the manager on its own: classic channels, write-only, control messages --


class Instance:
    """A bare `AsyncServer` with our manager on a real aiohttp server: clients
    join the room named in their auth."""

    def __init__(self, client: aioredis.Redis | RedisCluster, *, sharded: bool | None) -> None:
        self.manager = RoomShardedRedisManager(client, sharded=sharded)
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp", client_manager=self.manager, json=json_codec
        )
        self.app = web.Application()
        self.sio.attach(self.app)

        async def on_connect(sid: str, environ: dict[str, Any], auth: dict[str, str]) -> None:
            await self.sio.enter_room(sid, auth["room"])

        self.sio.on("connect", on_connect)
        self.server = TestServer(self.app)

    async def client(self, room: str) -> tuple[socketio.AsyncClient, EventLog]:
        client = await connect_client(str(self.server.make_url("/")), {"room": room}, ["news"])
        return client.sio, client.log

    async def close(self) -> None:
        """Close its manager, the manager's Redis client and its server."""
        await close_manager(self.manager)
        await self.server.close()


async def close_manager(manager: RoomShardedRedisManager) -> None:
    await manager.close()
    await manager.redis.aclose()


async def test_classic_channels_write_only_and_cross_instance_disconnect(
    redis_server, redis_client
):
    one, two = (
        Instance(aioredis.Redis.from_url(redis_server.url), sharded=False) for _ in range(2)
    )
    for instance in (one, two):
        await instance.server.start_server()
    writer = RoomShardedRedisManager(
        aioredis.Redis.from_url(redis_server.url), write_only=True, sharded=False, json=json_codec
    )
    clients = []
    try:
        red, red_log = await one.client("red")
        blue, blue_log = await two.client("blue")
        clients = [red, blue]
        # Without sharded pub/sub the room channels are classic ones.
        assert set(await redis_client.pubsub_channels()) == {
            CONTROL,
            room_channel("red"),
            room_channel("blue"),
        }
        assert await redis_client.pubsub_shardchannels() == []

        await assert_rooms_reach_only_their_members(
            one, two, writer, ("red", "blue"), (red_log, blue_log)
        )
        # Disconnecting a client of instance two from instance one.
        await disconnect_from_another_instance(one, blue)
    finally:
        for client in clients:
            await client.disconnect()
        await close_manager(writer)
        for instance in (one, two):
            await instance.close()


# -- the manager on a Redis Cluster -----------------------------------------


class ClusterView:
    """The test's own look at a real cluster: which primary owns a channel,
    and what each node has subscribers for."""

    def __init__(self, cluster: Any) -> None:
        self.ports = [server.port for server in cluster.servers]
        self.admin = RedisCluster(host="127.0.0.1", port=self.ports[0])
        self.nodes = {port: aioredis.Redis(port=port, decode_responses=True) for port in self.ports}

    async def owner(self, channel: str) -> int:
        await self.admin.initialize()
        node = self.admin.get_node_from_key(channel)
        return int(node.port)

    async def shard_channels(self) -> dict[int, set[str]]:
        """Each node's sharded channels that have a subscriber there."""
        return {port: set(await node.pubsub_shardchannels()) for port, node in self.nodes.items()}

    async def subscribers(self, port: int, channel: str) -> int:
        return dict(await self.nodes[port].pubsub_shardnumsub(channel))[channel]

    async def move_slot(self, channel: str, to_port: int) -> None:
        """Give the (keyless) slot of `channel` to the node on `to_port`."""
        slot = self.admin.keyslot(channel)
        target = await self.nodes[to_port].execute_command("CLUSTER", "MYID")
        for port in [to_port, *(p for p in self.ports if p != to_port)]:
            await self.nodes[port].execute_command("CLUSTER", "SETSLOT", slot, "NODE", target)

    async def rooms_on_distinct_nodes(self, count: int, avoid: set[int]) -> list[str]:
        """`count` room names whose channels live on distinct nodes outside `avoid`."""
        rooms, used = [], set(avoid)
        for n in range(1000):
            port = await self.owner(room_channel(f"room-{n}"))
            if port not in used:
                rooms.append(f"room-{n}")
                used.add(port)
                if len(rooms) == count:
                    return rooms
        raise AssertionError("no rooms on distinct nodes")

    async def aclose(self) -> None:
        await self.admin.aclose()
        for node in self.nodes.values():
            await node.aclose()


def cluster_client(cluster: Any) -> RedisCluster:
    return RedisCluster(host="127.0.0.1", port=cluster.servers[0].port)


async def test_on_a_cluster_room_channels_live_on_their_slots_primary_where_hosted(redis_cluster):
    view = ClusterView(redis_cluster)
    control_port = await view.owner(CONTROL)
    red_room, blue_room = await view.rooms_on_distinct_nodes(2, avoid={control_port})
    red, blue = room_channel(red_room), room_channel(blue_room)
    red_port, blue_port = await view.owner(red), await view.owner(blue)
    one, two = (Instance(cluster_client(redis_cluster), sharded=None) for _ in range(2))
    for instance in (one, two):
        await instance.server.start_server()
    writer = RoomShardedRedisManager(
        cluster_client(redis_cluster), write_only=True, json=json_codec
    )
    clients = []
    try:
        red_client, red_log = await one.client(red_room)
        blue_client, blue_log = await two.client(blue_room)
        clients = [red_client, blue_client]

        # Each channel is subscribed on the primary owning its slot, by the
        # instances that host a member of its room only; the control channel
        # by both, on its own node.
        async def settled() -> bool:
            return all(
                instance.manager.subscriptions.nodes.get(f"127.0.0.1:{control_port}") == {CONTROL}
                for instance in (one, two)
            )

        await eventually(settled)
        assert await view.shard_channels() == {
            control_port: {CONTROL},
            red_port: {red},
            blue_port: {blue},
        }
        assert await view.subscribers(control_port, CONTROL) == 2
        assert await view.subscribers(red_port, red) == 1
        assert await view.subscribers(blue_port, blue) == 1
        assert one.manager.subscriptions.channels == {red}
        assert two.manager.subscriptions.channels == {blue}
        for node in view.nodes.values():  # nothing classic: a cluster copies it everywhere
            assert await node.pubsub_channels() == []

        await assert_rooms_reach_only_their_members(
            one, two, writer, (red_room, blue_room), (red_log, blue_log)
        )
        # Disconnecting a client of instance two from instance one.
        await disconnect_from_another_instance(one, blue_client)

        async def blue_dropped() -> bool:
            gone = (await view.shard_channels())[blue_port] == set()
            return gone and two.manager.subscriptions.channels == frozenset()

        await eventually(blue_dropped)
    finally:
        for client in clients:
            await client.disconnect()
        await close_manager(writer)
        for instance in (one, two):
            await instance.close()
        await view.aclose()


async def test_on_a_cluster_a_room_survives_a_killed_connection_and_a_slot_migration(redis_cluster):
    view = ClusterView(redis_cluster)
    instance = Instance(cluster_client(redis_cluster), sharded=None)
    await instance.server.start_server()
    writer = RoomShardedRedisManager(
        cluster_client(redis_cluster), write_only=True, json=json_codec
    )
    red_client = None
    try:
        red_client, red_log = await instance.client("red")
        red = room_channel("red")
        port = await view.owner(red)

        async def delivered(phase: str, room: str = "red", log: EventLog = red_log) -> None:
            """Emit until the client gets one of `phase` (a message published
            while the subscription was being restored is lost, as any pub/sub)."""
            async with asyncio.timeout(30):
                n = 0
                while not [d for d in log.of("news") if d["phase"] == phase]:
                    await writer.emit("news", {"phase": phase, "n": n}, to=room)
                    n += 1
                    await asyncio.sleep(0.1)

        await delivered("before")

        # The node closes the manager's subscriber connection.
        killed = await view.nodes[port].execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1
        await delivered("after a kill")
        assert red in (await view.shard_channels())[port]

        # The room's slot moves to another primary: the old one drops the
        # subscription, the manager subscribes on the new owner.
        new_port = next(p for p in view.ports if p != port)
        await view.move_slot(red, new_port)
        await delivered("after a migration")
        channels = await view.shard_channels()
        assert red in channels[new_port] and red not in channels[port]
        assert instance.manager.subscriptions.channels == {red}

        # A slot moved while the manager's slot map still says otherwise: the
        # old owner answers its SSUBSCRIBE with MOVED, and the channel follows.
        green = room_channel("green")
        green_port = await view.owner(green)
        green_new_port = next(p for p in view.ports if p != green_port)
        await view.move_slot(green, green_new_port)
        green_client, green_log = await instance.client("green")
        try:
            await delivered("after a MOVED", "green", green_log)
            assert green in (await view.shard_channels())[green_new_port]
            assert instance.manager.subscriptions.channels == {red, green}
        finally:
            await green_client.disconnect()
    finally:
        if red_client is not None:
            await red_client.disconnect()
        await close_manager(writer)
        await instance.close()
        await view.aclose()


async def test_on_a_cluster_rooms_are_served_locally_while_the_cluster_is_away(redis_cluster):
    one, two = (Instance(cluster_client(redis_cluster), sharded=None) for _ in range(2))
    for instance in (one, two):
        await instance.server.start_server()
    red_client = None
    try:
        red_client, red_log = await one.client("red")
        await two.sio.emit("news", {"phase": "before"}, to="red")  # two hosts no red member
        await red_log.wait_for("news", lambda d: d["phase"] == "before")

        for server in redis_cluster.servers:
            server.stop()
        # Publishing fails (and is logged); the instance's own members still get it.
        await one.sio.emit("news", {"phase": "away"}, to="red")
        await red_log.wait_for("news", lambda d: d["phase"] == "away")
        for server in redis_cluster.servers:
            server.start()

        async with asyncio.timeout(60):
            while not [d for d in red_log.of("news") if d["phase"] == "back"]:
                await two.sio.emit("news", {"phase": "back"}, to="red")
                await asyncio.sleep(0.2)
    finally:
        if red_client is not None:
            await red_client.disconnect()
        for instance in (one, two):
            await instance.close()


# -- many sockets leaving at once -------------------------------------------


async def test_two_thousand_sockets_leaving_at_once_are_released(
    settings, start_server, token, signer
):
    count = 2000
    server = await start_server(
        settings_with(
            settings,
            connections_per_user=count,
            connections_per_ip=count,
            rate_limits=replace(settings.rate_limits, enabled=False),  # one address connects
        )
    )
    sio = server.app[SIO]
    base = str(server.make_url("/"))
    tokens = [token("acme", f"u{n}") for n in range(count)]  # a user room each
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as crowd:
        sockets: list[EngineSocket] = []
        for start in range(0, count, 200):
            opened = await asyncio.gather(
                *(EngineSocket.open(crowd, base) for _ in range(start, min(count, start + 200)))
            )
            answers = await asyncio.gather(
                *(s.connect(t) for s, t in zip(opened, tokens[start:], strict=False))
            )
            assert all(answer.startswith("40") for answer in answers)
            sockets.extend(opened)
        assert len(sio.manager.rooms["/"][None]) == count
        # Every socket goes at once (the session closes every connection).
    async with aiohttp.ClientSession() as http, asyncio.timeout(120):  # a hang guard only
        health = []
        while sio.manager.rooms.get("/"):
            async with http.get(str(server.make_url("/healthz"))) as response:
                health.append(response.status)
            await asyncio.sleep(0.05)
    assert set(health) <= {200}
    assert sio.manager.rooms == {}
    assert sio.manager._rooms_of.get("/", {}) == {}
