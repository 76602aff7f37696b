"""The subscriber side of the room-sharded Socket.IO manager: which Redis
channels an instance listens to, kept in step with the rooms it hosts.

- `RoomSubscriptions`: one subscriber connection (a single Redis server, a
  Sentinel primary, or one node of a cluster): the control channel, and each
  room channel wanted, (un)subscribed in order by one task and restored after
  a reconnect.
- `ClusterRoomSubscriptions`: a Redis Cluster serves a sharded channel only
  on the primary owning its hash slot, so it keeps one `RoomSubscriptions`
  per primary, routes each channel by the cluster's slot map, and moves
  channels when the map changes (a node failed over, a slot migrated).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from itertools import groupby
from typing import Any, NoReturn

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, RedisError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError

from leadstream.pacing import Backoff
from leadstream.server.redis_connections import REDIS_ERRORS

log = logging.getLogger(__name__)

# Channels per SUBSCRIBE/UNSUBSCRIBE command when many change at once.
SUBSCRIBE_BATCH = 500
# Resubscribing after Redis went away, here and in `remote_stop` (jittered, so
# instances do not return together).
RECONNECT = Backoff(base_delay_s=0.5, max_delay_s=30.0)
# While a cluster node is unreachable, its slot map is read again this often
# (a replica may have taken its slots over).
NODE_DOWN_RECHECK_S = 1.0
# Trouble comes in bursts (every channel of a moved slot, every node of a
# restarted cluster): the slot map is read once this long after the first.
SLOT_MAP_SETTLE_S = 0.1

OnMessage = Callable[[bytes], Awaitable[None]]


class RoomSubscriptions:
    """The subscriber connection of one instance (or, on a cluster, of one
    node): the control channel, and each room channel this instance wants,
    kept in step with `want` and `drop` by one task, and restored after a
    reconnect.

    :param client: a redis-py asyncio client of one server.
    :param control: the control channel (classic pub/sub) [None: none on
        this connection; on a cluster it is a sharded channel like a room's].
    :param sharded: room channels use SSUBSCRIBE rather than SUBSCRIBE.
    :param slot_of: a channel's cluster hash slot: one SSUBSCRIBE may only
        name channels of one slot on a cluster [None: any mix].
    :param on_lost: called when this connection fails, or when the server
        drops a channel it did not ask to leave (its slot moved to another
        node), so that a cluster re-reads its slot map.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        control: str | None,
        *,
        sharded: bool,
        slot_of: Callable[[str], int] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._control = control
        self.sharded = sharded
        self._slot_of = slot_of
        self._on_lost = on_lost
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
        """Channels confirmed subscribed on the current connection (the
        classic control channel aside)."""
        return frozenset(self._confirmed)

    @property
    def wanted(self) -> frozenset[str]:
        return frozenset(self._wanted)

    def want(self, channel: str) -> None:
        self._wanted.add(channel)
        self._changed.set()

    def drop(self, channel: str) -> None:
        self._wanted.discard(channel)
        self._changed.set()
        self._wake(channel)  # nothing to wait for here now

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

    async def run(self, on_message: OnMessage) -> None:
        """Listen for ever: subscribe, pass each message to `on_message`,
        reconnect with a capped backoff when Redis goes away."""
        failures = 0
        while True:
            try:
                await self._session(on_message)
            except RedisError as exc:
                # Connected until now: the backoff starts over.
                failures = failures + 1 if self.down else 1
                self.down = True
                delay = RECONNECT.delay(failures)
                log.warning("socket.io subscriber lost Redis (retrying in %.1fs): %s", delay, exc)
                if self._on_lost is not None:
                    self._on_lost()
                await asyncio.sleep(delay)

    async def _session(self, on_message: OnMessage) -> NoReturn:
        """One connection: subscribe to everything wanted, then listen until it fails."""
        pubsub = self._client.pubsub()
        syncing: asyncio.Task[None] | None = None
        control = self._control.encode() if self._control is not None else None
        try:
            if self._control is not None:
                await pubsub.subscribe(self._control)
            else:
                await pubsub.ping()  # connects; the rooms follow from `_sync`
            self.down = False
            self._requested.clear()
            self._confirmed.clear()
            self._unconfirmed.clear()
            self._changed.set()
            self._connection += 1
            syncing = asyncio.create_task(
                self._sync(pubsub, self._connection), name="socketio-subscriptions"
            )
            while True:  # not `listen()`: it ends while nothing is subscribed
                if pubsub.connection is None:  # `_sync` closed it after a failed command
                    raise RedisConnectionError("the subscriber connection was closed")
                try:
                    message = await pubsub.get_message(timeout=None)
                except AskError as exc:  # MOVED or ASK, the answer to an SSUBSCRIBE
                    if self._slot_of is None:
                        raise
                    self._moved(exc.slot_id)
                    continue
                kind = message["type"] if message is not None else "pong"
                if kind in ("message", "smessage"):
                    await on_message(message["data"])
                elif kind != "pong" and message["channel"] != control:
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
            await pubsub.aclose()  # ends the read in `_session`

    async def _sync_changes(self, pubsub: Any, connection: int) -> None:
        subscribe = pubsub.ssubscribe if self.sharded else pubsub.subscribe
        unsubscribe = pubsub.sunsubscribe if self.sharded else pubsub.unsubscribe
        while True:
            await self._changed.wait()
            if connection != self._connection:
                return
            self._changed.clear()
            for batch in self._batches(self._requested - self._wanted):
                self._sent(batch)
                self._requested.difference_update(batch)
                await unsubscribe(*batch)
            for batch in self._batches(self._wanted - self._requested):
                self._sent(batch)
                self._requested.update(batch)
                await subscribe(*batch)

    def _batches(self, channels: set[str]) -> Iterator[list[str]]:
        """`channels` in commands of at most SUBSCRIBE_BATCH, one slot each on a cluster."""
        slot_of = self._slot_of
        if slot_of is None:
            ordered = sorted(channels)
            for start in range(0, len(ordered), SUBSCRIBE_BATCH):
                yield ordered[start : start + SUBSCRIBE_BATCH]
            return
        for _, same_slot in groupby(sorted(channels, key=slot_of), key=slot_of):
            members = list(same_slot)
            for start in range(0, len(members), SUBSCRIBE_BATCH):
                yield members[start : start + SUBSCRIBE_BATCH]

    def _moved(self, slot: int) -> None:
        """The node refused to subscribe channels of `slot` (MOVED): they
        wait until the slot map, read again, routes them elsewhere."""
        assert self._slot_of is not None
        for channel in [c for c in self._requested if self._slot_of(c) == slot]:
            self._requested.discard(channel)
            self._confirmed.discard(channel)
            self._unconfirmed.pop(channel, None)
        log.info("Redis Cluster slot %d moved: its channels follow it", slot)
        if self._on_lost is not None:
            self._on_lost()

    def _sent(self, channels: list[str]) -> None:
        for channel in channels:
            self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1

    def _confirm(self, kind: str, channel: str) -> None:
        if (
            kind == "sunsubscribe"
            and channel not in self._unconfirmed
            and channel in self._requested
        ):
            # Not asked for: the channel's slot left this node (a migration or
            # a failover). It is subscribed again where the slot map says once
            # it is read again (here too, if it did not change).
            self._requested.discard(channel)
            self._confirmed.discard(channel)
            log.info("Redis dropped the subscription to %s (its slot moved)", channel)
            if self._on_lost is not None:
                self._on_lost()
            return
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
            self._wake(channel)

    def _is_ready(self, channel: str) -> bool:
        return channel in self._confirmed and channel not in self._unconfirmed

    def _wake(self, channel: str) -> None:
        """End the waits of `ready(channel)`."""
        for waiter in self._waiters.pop(channel, ()):
            if not waiter.done():
                waiter.set_result(None)


class NodeSubscriber:
    """The subscriptions of one cluster primary, its own client and the task
    that listens to it."""

    def __init__(self, client: aioredis.Redis, subscriptions: RoomSubscriptions) -> None:
        self.client = client
        self.subscriptions = subscriptions
        self.task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.client.aclose()


class ClusterRoomSubscriptions:
    """The subscriber side on a Redis Cluster: every channel, the control
    channel included, is a sharded channel subscribed on the primary that
    owns its hash slot, through one connection per such primary.

    Channels are routed by the cluster client's slot map. When a node's
    connection fails, or a node drops a channel because its slot moved, the
    map is read again and every channel whose owner changed moves to its new
    owner (a node that came back on the same address is resubscribed by its
    own reconnect).

    :param cluster: the manager's redis-py `RedisCluster` (its slot map and
        the connection settings of its nodes are used; the connections here
        are separate).
    :param control: the control channel.
    """

    def __init__(self, cluster: RedisCluster, control: str) -> None:
        self._cluster = cluster
        self._control = control
        self.sharded = True
        self._wanted: set[str] = {control}
        self._owner: dict[str, str] = {}  # channel -> node name
        self._nodes: dict[str, NodeSubscriber] = {}
        self._stale = asyncio.Event()  # the slot map must be read again
        self._routed = asyncio.Event()  # the slot map was read once
        self._on_message: OnMessage | None = None
        self.down = False  # the slot map cannot be read: joins do not wait

    @property
    def channels(self) -> frozenset[str]:
        """Room channels confirmed subscribed, on whichever node."""
        confirmed: set[str] = set()
        for node in self._nodes.values():
            confirmed |= node.subscriptions.channels
        return frozenset(confirmed - {self._control})

    @property
    def nodes(self) -> dict[str, frozenset[str]]:
        """Each node's (`host:port`) confirmed channels, the control channel included."""
        return {name: node.subscriptions.channels for name, node in self._nodes.items()}

    def want(self, channel: str) -> None:
        self._wanted.add(channel)
        if self._routed.is_set():
            self._route(channel)

    def drop(self, channel: str) -> None:
        self._wanted.discard(channel)
        owner = self._owner.pop(channel, None)
        if owner is not None:
            self._nodes[owner].subscriptions.drop(channel)

    async def ready(self, channel: str, within_s: float) -> bool:
        """Wait until `channel` is subscribed on its node; see `RoomSubscriptions.ready`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        if channel not in self._owner and not self.down:
            try:
                async with asyncio.timeout(within_s):
                    await self._routed.wait()
            except TimeoutError:
                return False
        while True:
            owner = self._owner.get(channel)
            if owner is None:
                return True  # Redis is away, or the slot is not served: nothing to wait for
            left = deadline - loop.time()
            ready = await self._nodes[owner].subscriptions.ready(channel, max(0.0, left))
            if self._owner.get(channel) == owner or left <= 0:
                return ready
            # It moved to another node while it waited: wait there.

    async def run(self, on_message: OnMessage) -> None:
        """Read the slot map, route every wanted channel, and read the map
        again whenever a node reports trouble; until cancelled."""
        self._on_message = on_message
        failures = 0
        try:
            while True:
                self._stale.clear()
                try:
                    await self._read_slot_map()
                except REDIS_ERRORS as exc:  # no node answers
                    self.down = True
                    log.warning("cannot read the Redis Cluster's slot map (retrying): %s", exc)
                    failures += 1
                    await asyncio.sleep(RECONNECT.delay(failures))
                    continue
                failures = 0
                self.down = False
                for channel in list(self._wanted):
                    self._route(channel)
                self._routed.set()
                await self._forget_idle_nodes()
                down = any(node.subscriptions.down for node in self._nodes.values())
                try:
                    async with asyncio.timeout(NODE_DOWN_RECHECK_S if down else None):
                        await self._stale.wait()
                except TimeoutError:
                    continue
                await asyncio.sleep(SLOT_MAP_SETTLE_S)
        finally:
            self._routed.clear()  # a join after this routes nothing
            nodes, self._nodes = list(self._nodes.values()), {}
            self._owner.clear()
            for node in nodes:
                await node.close()

    async def _read_slot_map(self) -> None:
        if self._routed.is_set():
            await self._cluster.nodes_manager.initialize()
        else:
            await self._cluster.initialize()

    def _route(self, channel: str) -> None:
        """Subscribe `channel` on the node owning its slot (moving it there
        from its old owner)."""
        try:
            node = self._cluster.get_node_from_key(channel)
        except SlotNotCoveredError:  # not served now: read the map again later
            self._stale.set()
            return
        if node is None:
            return
        old = self._owner.get(channel)
        if old == node.name:
            # Still there (a node that dropped or refused it was out of date):
            # subscribe it again if it is not.
            self._nodes[old].subscriptions.want(channel)
            return
        if old is not None:
            self._nodes[old].subscriptions.drop(channel)
        self._owner[channel] = node.name
        self._node(node).subscriptions.want(channel)

    def _node(self, node: ClusterNode) -> NodeSubscriber:
        subscriber = self._nodes.get(node.name)
        if subscriber is None:
            pool = aioredis.ConnectionPool(
                connection_class=node.connection_class, **node.connection_kwargs
            )
            client = aioredis.Redis.from_pool(pool)
            subscriptions = RoomSubscriptions(
                client, None, sharded=True, slot_of=self._cluster.keyslot, on_lost=self._stale.set
            )
            subscriber = NodeSubscriber(client, subscriptions)
            assert self._on_message is not None
            subscriber.task = asyncio.create_task(
                subscriptions.run(self._on_message), name=f"socketio-subscriber-{node.name}"
            )
            self._nodes[node.name] = subscriber
        return subscriber

    async def _forget_idle_nodes(self) -> None:
        """Close the connections of nodes that are no longer primaries and
        hold nothing this instance wants."""
        primaries = {node.name for node in self._cluster.get_primaries()}
        for name, node in list(self._nodes.items()):
            if name not in primaries and not node.subscriptions.wanted:
                del self._nodes[name]
                await node.close()
