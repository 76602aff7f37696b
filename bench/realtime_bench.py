"""Realtime figures of issue 7, each beside bare python-socketio in the same run.

Two `leadstream serve` processes share one redis-server and one SQLite file;
two `bench/realtime_baseline_server.py` processes (bare python-socketio on
aiohttp with `AsyncRedisManager`, library defaults, its own redis-server) do
the same emits. Our figure is reported as a ratio to the baseline's.

Clients are the same for both: a small Socket.IO v4 client speaking the
Engine.IO wire protocol over aiohttp's websocket client (open `0{..}`,
connect `40{"token":..}`, pings `2` answered `3`, events `42[..]`, acks
`43N[..]`), spread over several client processes (`--client-procs`), half
of them on each instance, each subscribed with `leads:subscribe {}` (org
`bench`, one user per connection). Both systems' clients stay connected
through the fan-out runs (the idle side receives nothing), and the burst and
paced runs go ours, baseline, baseline, ours (`--rounds 2`) so that other
load on the machine weighs on both alike; figures pool both runs. Everything
runs on 127.0.0.1 and the load generator shares the machine's cores with the
servers, as in DESIGN.md; the load average is printed with the figures.
Latencies are receipt time minus a send time written into the payload (the
lead's name carries `lsb|run|seq|unix-time`), all on one machine's clock.

1. Fan-out (`--clients`, default 1,000):
   - burst: `--events` change events, each one `POST /api/leads` (a new lead)
     on instance 1, `--concurrency` requests in flight. Baseline: the same
     number of `POST /emit` requests, each emitting one `leads:changes` event
     of the same shape (a real lead record of ours as the template). Figure:
     changes delivered per second over all clients, from the first request to
     the last client having them all. Our feed may carry several changes in
     one event when writes queue up behind an emit (that is its design), so
     the packets delivered are printed too.
   - paced: `--rate` events/s for `--paced-seconds`, same paths; latency from
     just before the request to receipt, over every (client, change): p50/p99.
   - beside both, the CPU time the two server processes of each side spent
     (from /proc, per event): other load on the machine moves latencies a
     lot, this much less.
2. Bulk save (`--records`, default 1,000): one user's chat message "find N
   CTOs and save them" (the offline planner: one search, one `save_leads`,
   i.e. one store write of N leads, emitted as coalesced `leads:changes`;
   the bench raises `LEADSTREAM_SEARCH_MAX` to N for it). Figure: records
   delivered per second to all clients, from `chat:send` to the last client
   holding all N (so it includes the search and the save). Baseline: the very
   changes our server emitted (captured by the chatting client, which is also
   subscribed) replayed through `/emit` as one emit per record, and as the
   same coalesced packets for reference. When the chat path fails (an error
   or no `chat:done`), the bench says so and falls back to N concurrent
   `POST /api/leads` (N separate writes, coalesced only as far as they queue
   up), which is labelled in the output. A write made by this process
   straight into the SQLite file would not be emitted by any server, so it is
   not an option.
3. Cross-instance change latency at rest (before the fan-out clients
   connect; `--latency-samples`): `POST /api/leads` on instance 1 to receipt
   by one subscriber on instance 2, one write at a time. Baseline: `POST /emit`
   on baseline 1 to a subscriber on baseline 2.
4. Memory per idle connection (`--connections`, default 5,000): a fresh
   server process (a third instance of each, same Redis and store), RSS from
   /proc before and after that many connected, idle websocket connections
   (ours authenticated by token; no subscribe), divided.

Our servers run with `LEADSTREAM_RATE_LIMITS=off`, the per-connection event
limit and the per-user and per-address connection limits raised out of the way, and a
`--people` directory (100,000 by default, which holds the 1,000 CTOs of the
bulk save; the second instance starts after the first has seeded it).

`--deflate` makes the clients offer permessage-deflate as browsers do (off by
default: aiohttp's client does not offer it). The baseline then compresses
every frame; ours only with `LEADSTREAM_WS_COMPRESSION=1` (off by default
since issue 12: it costs ~110 KB per socket).

Run: python bench/realtime_bench.py [--clients 1000] [--events 200]
     [--records 1000] [--connections 5000] [--client-procs 4] [--deflate]
     [--only memory]
Defaults take about 3-5 minutes on 2 cores; numbers vary with load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # process helpers
from support import HttpProcess, RedisServer, ServerProcess, cpu_seconds, rss_kb

HERE = Path(__file__).resolve().parent
ORG = "bench"
SECRET = "realtime-bench-secret-" + "r" * 32
STAMP = "lsb"
BASELINE_SERVER = HERE / "realtime_baseline_server.py"
START_TIMEOUT_S = 300.0  # a busy machine seeds the directory slowly


# --------------------------------------------------------------------------- client


class SocketIOError(RuntimeError):
    pass


EventSink = Callable[["RawClient", str, Any, float], None]


class RawClient:
    """A minimal Socket.IO v4 client over one websocket (namespace `/`)."""

    __slots__ = ("_acks", "_next_id", "_reader", "closed", "count", "done", "group", "sink", "ws")

    def __init__(self, sink: EventSink, group: str = "") -> None:
        self.sink = sink
        self.group = group  # which system's clients it belongs to (workers)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self.count = 0  # changes counted by a worker since it was armed
        self.done = False
        self.closed = False

    async def connect(
        self, http: aiohttp.ClientSession, url: str, token: str, *, deflate: bool = False
    ) -> None:
        """Open, connect with the token; `deflate` offers permessage-deflate."""
        ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        self.ws = await http.ws_connect(
            ws_url, max_msg_size=0, autoclose=True, compress=15 if deflate else 0
        )
        opened = await self._handshake_text()
        if not opened.startswith("0"):
            raise SocketIOError(f"expected an Engine.IO open packet, got {opened[:80]!r}")
        await self.ws.send_str("40" + orjson.dumps({"token": token}).decode())
        answer = await self._handshake_text()
        if answer.startswith("44"):
            raise SocketIOError(f"connection refused: {answer[2:200]}")
        if not answer.startswith("40"):
            raise SocketIOError(f"unexpected connect answer {answer[:80]!r}")
        self._reader = asyncio.create_task(self._read())

    async def _handshake_text(self) -> str:
        assert self.ws is not None
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), 30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise SocketIOError(f"websocket closed during handshake: {msg.type}")
            if msg.data == "2":
                await self.ws.send_str("3")
                continue
            return msg.data

    async def call(self, event: str, data: Any, timeout: float = 30) -> Any:
        assert self.ws is not None
        self._next_id += 1
        ack_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        await self.ws.send_str(f"42{ack_id}" + orjson.dumps([event, data]).decode())
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._acks.pop(ack_id, None)

    async def _read(self) -> None:
        assert self.ws is not None
        ws = self.ws
        try:
            async for msg in ws:
                now = time.time()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data: str = msg.data
                kind = data[:2]
                if kind == "42":
                    event, *args = orjson.loads(data[2:])
                    self.sink(self, event, args[0] if args else None, now)
                elif data == "2":
                    await ws.send_str("3")
                elif kind == "43":
                    end = 2
                    while data[end].isdigit():
                        end += 1
                    future = self._acks.get(int(data[2:end]))
                    if future is not None and not future.done():
                        values = orjson.loads(data[end:])
                        future.set_result(values[0] if values else None)
                elif kind == "41" or data == "1":
                    break
        except (aiohttp.ClientError, asyncio.CancelledError, ConnectionError):
            pass
        finally:
            self.closed = True
            for future in self._acks.values():
                if not future.done():
                    future.set_exception(SocketIOError("connection closed"))

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.send_str("41")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


def stamped_name(run: str, seq: int) -> str:
    """A lead name carrying its send time; taken just before the request."""
    return f"{STAMP}|{run}|{seq}|{time.time():.6f}"


# --------------------------------------------------------------------------- workers


@dataclass
class Tally:
    """What one worker's clients received since `arm`."""

    group: str = ""  # count only clients of this group (one system's)
    run: str | None = None  # count only changes of this run (None: every change)
    expect: int = 0
    clients_done: int = 0
    changes: int = 0
    packets: int = 0
    first: float = 0.0
    last: float = 0.0
    latencies: array = field(default_factory=lambda: array("d"))
    complete: asyncio.Event = field(default_factory=asyncio.Event)


class Worker:
    """Runs in a client process: holds connections and tallies `leads:changes`."""

    def __init__(self) -> None:
        self.clients: dict[str, list[RawClient]] = {}
        self.tally = Tally()
        self.http: aiohttp.ClientSession | None = None

    def on_event(self, client: RawClient, event: str, data: Any, now: float) -> None:
        if event != "leads:changes":
            return
        tally = self.tally
        if client.group != tally.group:
            return
        prefix = None if tally.run is None else f"{STAMP}|{tally.run}|"
        counted = 0
        for change in data["changes"]:
            lead = change.get("lead")
            name = lead.get("name", "") if lead else ""
            if prefix is not None:
                if not name.startswith(prefix):
                    continue
                tally.latencies.append(now - float(name.rsplit("|", 1)[1]))
            counted += 1
        if not counted:
            return
        if not tally.packets:
            tally.first = now
        tally.packets += 1
        tally.changes += counted
        tally.last = now
        client.count += counted
        if not client.done and client.count >= tally.expect:
            client.done = True
            tally.clients_done += 1
            if tally.clients_done >= len(self.clients.get(tally.group, ())):
                tally.complete.set()

    async def connect(
        self, group: str, targets: list[tuple[str, str]], subscribe: bool, deflate: bool
    ) -> dict[str, Any]:
        if self.http is None:
            self.http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        gate = asyncio.Semaphore(25)
        errors: list[str] = []
        clients = self.clients.setdefault(group, [])

        async def one(url: str, token: str) -> None:
            async with gate:
                client = RawClient(self.on_event, group)
                try:
                    assert self.http is not None
                    await client.connect(self.http, url, token, deflate=deflate)
                    if subscribe:
                        ack = await client.call("leads:subscribe", {})
                        if not ack.get("ok"):
                            raise SocketIOError(f"subscribe refused: {ack}")
                    clients.append(client)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors.append(repr(exc))
                    await client.close()

        await asyncio.gather(*(one(url, token) for url, token in targets))
        return {"connected": len(clients), "failed": len(errors), "errors": errors[:3]}

    def arm(self, group: str, run: str | None, expect: int) -> dict[str, Any]:
        self.tally = Tally(group=group, run=run, expect=expect)
        clients = self.clients.get(group, [])
        for client in clients:
            client.count = 0
            client.done = False
        if not clients:
            self.tally.complete.set()
        return {"ok": True}

    async def wait(self, timeout: float) -> dict[str, Any]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.tally.complete.wait(), timeout)
        tally = self.tally
        clients = self.clients.get(tally.group, [])
        return {
            "clients": len(clients),
            "complete": tally.clients_done,
            "closed": sum(c.closed for c in clients),
            "changes": tally.changes,
            "packets": tally.packets,
            "first": tally.first,
            "last": tally.last,
            "latencies": tally.latencies.tobytes(),
        }

    async def close(self, group: str | None = None) -> dict[str, Any]:
        """Close the connections of `group` (None: all)."""
        gate = asyncio.Semaphore(100)

        async def one(client: RawClient) -> None:
            async with gate:
                await client.close()

        groups = list(self.clients) if group is None else [group]
        for name in groups:
            await asyncio.gather(*(one(c) for c in self.clients.pop(name, [])))
        return {"ok": True}


def worker_main(conn: Connection) -> None:
    asyncio.run(_worker_loop(conn))


async def _worker_loop(conn: Connection) -> None:
    worker = Worker()
    while True:
        command = await asyncio.to_thread(conn.recv)
        op = command["op"]
        try:
            if op == "connect":
                result = await worker.connect(
                    command["group"], command["targets"], command["subscribe"], command["deflate"]
                )
            elif op == "arm":
                result = worker.arm(command["group"], command["run"], command["expect"])
            elif op == "wait":
                result = await worker.wait(command["timeout"])
            elif op == "close":
                result = await worker.close(command.get("group"))
            else:  # "exit"
                await worker.close()
                if worker.http is not None:
                    await worker.http.close()
                conn.send({"ok": True})
                return
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            result = {"error": repr(exc)}
        conn.send(result)


class ClientPool:
    """Client processes, each holding a share of the connections."""

    def __init__(self, processes: int, *, deflate: bool = False) -> None:
        self.deflate = deflate
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for _ in range(processes):
            parent, child = context.Pipe()
            proc = context.Process(target=worker_main, args=(child,), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    async def _ask(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for conn, command in zip(self.conns, commands, strict=True):
            conn.send(command)
        results = await asyncio.gather(*(asyncio.to_thread(conn.recv) for conn in self.conns))
        for result in results:
            if "error" in result:
                raise RuntimeError(f"client process failed: {result['error']}")
        return results

    async def all(self, **command: Any) -> list[dict[str, Any]]:
        return await self._ask([command] * len(self.conns))

    async def connect(self, group: str, targets: list[tuple[str, str]], *, subscribe: bool) -> int:
        shares = [targets[i :: len(self.conns)] for i in range(len(self.conns))]
        results = await self._ask(
            [
                {
                    "op": "connect",
                    "group": group,
                    "targets": share,
                    "subscribe": subscribe,
                    "deflate": self.deflate,
                }
                for share in shares
            ]
        )
        connected = sum(r["connected"] for r in results)
        failed = sum(r["failed"] for r in results)
        if failed:
            errors = [e for r in results for e in r["errors"]]
            print(f"    ! {failed} of {len(targets)} connections failed, e.g. {errors[:2]}")
        return connected

    async def arm(self, group: str, run: str | None, expect: int) -> None:
        await self.all(op="arm", group=group, run=run, expect=expect)

    async def wait(self, timeout: float) -> Received:
        return Received.merge(await self.all(op="wait", timeout=timeout))

    async def close_connections(self, group: str | None = None) -> None:
        await self.all(op="close", group=group)

    def shutdown(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send({"op": "exit"})
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)


@dataclass
class Received:
    clients: int
    complete: int
    closed: int
    changes: int
    packets: int
    first: float
    last: float
    latencies: list[float]
    server_cpu: float = 0.0  # CPU seconds the system's two instances spent meanwhile

    @classmethod
    def merge(cls, parts: list[dict[str, Any]]) -> Received:
        latencies: list[float] = []
        for part in parts:
            values = array("d")
            values.frombytes(part["latencies"])
            latencies.extend(values)
        firsts = [p["first"] for p in parts if p["packets"]]
        return cls(
            clients=sum(p["clients"] for p in parts),
            complete=sum(p["complete"] for p in parts),
            closed=sum(p["closed"] for p in parts),
            changes=sum(p["changes"] for p in parts),
            packets=sum(p["packets"] for p in parts),
            first=min(firsts, default=0.0),
            last=max((p["last"] for p in parts), default=0.0),
            latencies=latencies,
        )

    def note(self) -> str:
        text = f"{self.complete}/{self.clients} clients complete"
        if self.closed:
            text += f", {self.closed} connections lost"
        return text


# --------------------------------------------------------------------------- processes


def baseline_server(folder: Path, name: str, redis_url: str) -> HttpProcess:
    """Bare python-socketio (`bench/realtime_baseline_server.py`) on `redis_url`."""
    argv = [sys.executable, str(BASELINE_SERVER), "--redis", redis_url]
    return HttpProcess(
        argv, folder, {}, name=name, ready_path="/healthz", start_timeout_s=START_TIMEOUT_S
    )


def our_server(folder: Path, name: str, env: dict[str, str]) -> ServerProcess:
    """`leadstream serve` with the bench's settings (`env`)."""
    return ServerProcess(folder, env, name=name, start_timeout_s=START_TIMEOUT_S)


# --------------------------------------------------------------------------- systems


class System:
    """One side of the comparison: how to make its instances emit a change."""

    name = ""

    def __init__(self, instances: list[HttpProcess], http: aiohttp.ClientSession) -> None:
        self.instances = instances
        self.http = http

    @property
    def urls(self) -> list[str]:
        return [i.url for i in self.instances]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the instances so far (Redis not included)."""
        return sum(cpu_seconds(i.pid) for i in self.instances)

    def token(self, user: str) -> str:
        return ""

    async def write(self, run: str, seq: int, name: str | None = None) -> Any:
        """Make the instances emit one change (a new lead named `name`, by
        default stamped now) on instance 1."""
        raise NotImplementedError


class Ours(System):
    name = "leadstream"

    def __init__(self, instances: list[HttpProcess], http: aiohttp.ClientSession) -> None:
        super().__init__(instances, http)
        from leadstream.server.auth import TokenSigner

        self.signer = TokenSigner(SECRET, default_ttl_s=24 * 3600)
        self.writer = self.token("writer")

    def token(self, user: str) -> str:
        return self.signer.issue(ORG, user).token

    async def write(self, run: str, seq: int, name: str | None = None) -> dict[str, Any]:
        body = lead_body(run, seq, name or stamped_name(run, seq))
        async with self.http.post(
            self.urls[0] + "/api/leads",
            data=orjson.dumps(body),
            headers={"Authorization": f"Bearer {self.writer}", "Content-Type": "application/json"},
        ) as response:
            if response.status not in (200, 201):
                raise RuntimeError(f"POST /api/leads: {response.status} {await response.text()}")
            return await response.json()


class Baseline(System):
    name = "python-socketio"

    def __init__(
        self, instances: list[HttpProcess], http: aiohttp.ClientSession, template: dict[str, Any]
    ) -> None:
        super().__init__(instances, http)
        self.template = template
        self.version = 0

    def token(self, user: str) -> str:
        return "unused"  # bare python-socketio: no auth

    def change(self, name: str, seq: int) -> dict[str, Any]:
        self.version += 1
        lead = dict(self.template["lead"])
        lead["name"] = name
        lead["id"] = f"ld_baseline{self.version:012d}"
        change = dict(self.template, version=self.version, lead=lead, id=lead["id"])
        return {"version": self.version, "changes": [change]}

    async def write(self, run: str, seq: int, name: str | None = None) -> None:
        await self.emit([self.change(name or stamped_name(run, seq), seq)])

    async def emit(self, payloads: list[dict[str, Any]]) -> None:
        async with self.http.post(
            self.urls[0] + "/emit",
            data=orjson.dumps({"payloads": payloads}),
            headers={"Content-Type": "application/json"},
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"POST /emit: {response.status} {await response.text()}")
            await response.read()


def lead_body(run: str, seq: int, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": "Chief Technology Officer",
        "company": f"Bench Payments {seq}",
        "industry": "fintech",
        "location": "London, United Kingdom",
        "emails": [f"cto.{run}.{seq}@bench-payments.example"],
        "phones": ["+44 20 7946 0000"],
        "linkedin": f"https://www.linkedin.com/in/bench-{run}-{seq}",
        "tags": ["bench"],
    }


# --------------------------------------------------------------------------- measurements


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@dataclass
class Figures:
    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


async def cross_instance_latency(system: System, samples: int) -> tuple[list[float], str]:
    """One subscriber on instance 2, writes on instance 1, one at a time."""
    waiting: dict[str, asyncio.Future[float]] = {}

    def sink(client: RawClient, event: str, data: Any, now: float) -> None:
        if event != "leads:changes":
            return
        for change in data["changes"]:
            lead = change.get("lead") or {}
            future = waiting.pop(lead.get("name", ""), None)
            if future is not None and not future.done():
                future.set_result(now - float(lead["name"].rsplit("|", 1)[1]))

    subscriber = RawClient(sink)
    await subscriber.connect(system.http, system.urls[1], system.token("watcher"))
    assert (await subscriber.call("leads:subscribe", {}))["ok"]
    latencies: list[float] = []
    lost = 0
    loop = asyncio.get_running_loop()
    try:
        for seq in range(samples + 5):  # the first 5 warm up and are dropped
            future: asyncio.Future[float] = loop.create_future()
            name = stamped_name("xlat", seq)
            waiting[name] = future
            await system.write("xlat", seq, name)
            try:
                latency = await asyncio.wait_for(future, 5)
            except TimeoutError:
                lost += 1
                continue
            if seq >= 5:
                latencies.append(latency)
            await asyncio.sleep(0.02)
    finally:
        await subscriber.close()
    return latencies, (f"{lost} lost" if lost else "")


async def burst(system: System, pool: ClientPool, events: int, concurrency: int) -> Received:
    run = f"burst{time.monotonic_ns()}"
    await pool.arm(system.name, run, events)
    gate = asyncio.Semaphore(concurrency)

    async def one(seq: int) -> None:
        async with gate:
            await system.write(run, seq)

    cpu = system.cpu_seconds()
    started = time.time()
    await asyncio.gather(*(one(seq) for seq in range(events)))
    received = await pool.wait(timeout=max(60.0, events * 0.5))
    received.first = started
    received.server_cpu = system.cpu_seconds() - cpu
    return received


async def paced(system: System, pool: ClientPool, rate: float, seconds: float) -> Received:
    run = f"paced{time.monotonic_ns()}"
    count = max(1, round(rate * seconds))
    await pool.arm(system.name, run, count)
    loop = asyncio.get_running_loop()
    cpu = system.cpu_seconds()
    start = loop.time() + 0.05
    tasks = []
    for seq in range(count):
        await asyncio.sleep(max(0.0, start + seq / rate - loop.time()))
        tasks.append(asyncio.create_task(system.write(run, seq)))
    await asyncio.gather(*tasks)
    received = await pool.wait(timeout=60.0)
    received.server_cpu = system.cpu_seconds() - cpu
    return received


@dataclass
class BulkResult:
    received: Received
    seconds: float
    path: str
    captured: list[dict[str, Any]]  # the leads:changes payloads our server emitted


async def bulk_ours(
    system: Ours, pool: ClientPool, records: int, clients: int, text: str
) -> BulkResult:
    captured: list[dict[str, Any]] = []
    first_event: list[float] = []  # when the chatting client got the first leads:changes
    finished: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def sink(client: RawClient, event: str, data: Any, now: float) -> None:
        if event == "leads:changes":
            if not captured:
                first_event.append(now)
            captured.append(data)
        elif event in ("chat:done", "chat:error") and not finished.done():
            finished.set_result({"event": event, **data})

    chat = RawClient(sink)
    await chat.connect(system.http, system.urls[0], system.token("bulk-user"))
    try:
        assert (await chat.call("leads:subscribe", {}))["ok"]
        await pool.arm(system.name, None, records)
        cpu = system.cpu_seconds()
        started = time.time()
        ack = await chat.call("chat:send", {"text": text}, timeout=60)
        outcome: dict[str, Any] | str
        if not ack.get("ok"):
            outcome = f"chat:send refused: {ack}"
        else:
            try:
                outcome = await asyncio.wait_for(finished, 120)
            except TimeoutError:
                outcome = "no chat:done within 120 s"
        saved = sum(len(p["changes"]) for p in captured)
        if isinstance(outcome, dict) and outcome["event"] == "chat:done" and saved:
            received = await pool.wait(timeout=max(60.0, records * clients / 5000))
            seconds = received.last - started
            path = (
                f'chat "{text}" ({saved} changes in {len(captured)} event(s), the first '
                f"{first_event[0] - started:.2f} s after chat:send)"
            )
            if saved < records:
                path += f"; only {saved} of {records} saved: clients never complete"
            received.server_cpu = system.cpu_seconds() - cpu
            return BulkResult(received, seconds, path, captured)
        reason = outcome if isinstance(outcome, str) else f"{outcome['event']} {outcome}"
        print(f"    ! chat path failed ({str(reason)[:200]}); falling back to REST writes")
        # Drain whatever the chat may have emitted before re-arming.
        await asyncio.sleep(1)
        captured.clear()
        run = f"bulk{time.monotonic_ns()}"
        await pool.arm(system.name, run, records)
        gate = asyncio.Semaphore(50)

        async def one(seq: int) -> None:
            async with gate:
                await system.write(run, seq)

        cpu = system.cpu_seconds()
        started = time.time()
        await asyncio.gather(*(one(seq) for seq in range(records)))
        received = await pool.wait(timeout=max(60.0, records * clients / 5000))
        path = (
            f"FALLBACK: {records} concurrent POST /api/leads "
            f"({sum(len(p['changes']) for p in captured)} changes in {len(captured)} event(s))"
        )
        received.server_cpu = system.cpu_seconds() - cpu
        return BulkResult(received, received.last - started, path, captured)
    finally:
        await chat.close()


async def bulk_baseline(
    system: Baseline, pool: ClientPool, payloads: list[dict[str, Any]], clients: int
) -> tuple[Received, float]:
    records = sum(len(p["changes"]) for p in payloads)
    await pool.arm(system.name, None, records)
    cpu = system.cpu_seconds()
    started = time.time()
    await system.emit(payloads)
    received = await pool.wait(timeout=max(90.0, records * clients / 4000))
    received.server_cpu = system.cpu_seconds() - cpu
    return received, received.last - started


async def memory_per_connection(
    pool: ClientPool,
    fresh: Callable[[], HttpProcess],
    token: Callable[[str], str],
    connections: int,
) -> tuple[float, int, int, int]:
    """KB per idle connection on a fresh server process; (kb, before, after, connected)."""
    async with fresh() as instance:
        # Warm up: the first connections import and allocate what every later one reuses.
        warm = [(instance.url, token(f"warm{i}")) for i in range(20)]
        await pool.connect("memory", warm, subscribe=False)
        await pool.close_connections("memory")
        await asyncio.sleep(1.0)
        before = rss_kb(instance.pid)
        targets = [(instance.url, token(f"idle{i}")) for i in range(connections)]
        try:
            connected = await pool.connect("memory", targets, subscribe=False)
            await asyncio.sleep(3.0)
            after = rss_kb(instance.pid)
        finally:
            await pool.close_connections("memory")
    return (after - before) / max(connected, 1), before, after, connected


async def guarded(name: str, measurement: Any, failures: list[str]) -> None:
    """Run one measurement; a failure is reported and the others still run."""
    try:
        await measurement
    except Exception as exc:  # noqa: BLE001 - reported with the figures
        failures.append(f"{name}: {exc!r}"[:800])
        print(f"    ! {name} failed: {exc!r}"[:800])


# --------------------------------------------------------------------------- report


def ratio(ours: float, base: float) -> str:
    if not base or base != base or ours != ours:
        return "   n/a"
    return f"{ours / base:5.2f}x"


def row(what: str, ours: str, base: str, rat: str, target: str, met: bool | None = None) -> str:
    mark = "" if met is None else ("  ok" if met else "  MISSED")
    return f"  {what:<44} {ours:>18} {base:>18} {rat:>7}   {target}{mark}"


def _ratio_at_least(ours: float, base: float, low: float) -> bool | None:
    return None if not base or ours != ours or base != base else ours / base >= low


def _ratio_at_most(ours: float, base: float, high: float) -> bool | None:
    return None if not base or ours != ours or base != base else ours / base <= high


async def main_async(args: argparse.Namespace) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(65536, args.connections * 2 + 1000)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    folder = Path(tempfile.mkdtemp(prefix="leadstream-realtime-bench-"))
    processes = contextlib.AsyncExitStack()  # stopped in reverse order at the end
    pool: ClientPool | None = None
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max(args.concurrency, 50)),
        timeout=aiohttp.ClientTimeout(total=120),
    )
    started = time.perf_counter()
    failures: list[str] = []
    try:
        pool = ClientPool(args.client_procs, deflate=args.deflate)
        redis_ours = RedisServer(folder / "redis-ours")
        redis_base = RedisServer(folder / "redis-baseline")
        for redis in (redis_ours, redis_base):
            redis.start()
            processes.callback(redis.stop)
        env = {
            "REDIS_URL": redis_ours.url,
            "LEADSTREAM_STORE": f"sqlite:///{folder / 'shared' / 'leadstream.db'}",
            "LEADSTREAM_DATA_DIR": str(folder / "shared"),
            "LEADSTREAM_SECRET": SECRET,
            "LEADSTREAM_PEOPLE": str(args.people),
            "LEADSTREAM_SEARCH_MAX": str(max(200, args.records)),
            "LEADSTREAM_EVENTS_PER_S": "1000000",
            "LEADSTREAM_EVENTS_BURST": "1000000",
            "LEADSTREAM_CONNECTIONS_PER_USER": "1000000",
            "LEADSTREAM_CONNECTIONS_PER_IP": "1000000",
            "LEADSTREAM_RATE_LIMITS": "off",
            "LEADSTREAM_LOG_LEVEL": "WARNING",
        }
        (folder / "shared").mkdir()
        print(f"starting redis x2, leadstream x2 ({args.people:,} people), baseline x2 ...")
        # One after the other: the first seeds the shared directory.
        ours_instances = [
            await processes.enter_async_context(our_server(folder, f"ours{i}", env)) for i in (1, 2)
        ]
        base_instances = [
            await processes.enter_async_context(baseline_server(folder, f"base{i}", redis_base.url))
            for i in (1, 2)
        ]
        ours = Ours(ours_instances, http)
        template_payload = await ours.write("warmup", 0)
        template = {"version": 0, "op": "insert", "id": "", "lead": template_payload, "at": ""}
        template["at"] = template_payload["updatedAt"]
        base = Baseline(base_instances, http, template)
        await base.write("warmup", 0)
        systems: list[System] = [ours, base]
        figures = {s.name: Figures() for s in systems}

        clients: dict[str, int] = {}
        bulk: BulkResult | None = None

        async def cross_instance() -> None:
            print(
                f"cross-instance latency at rest ({args.latency_samples} writes, one at a time) ..."
            )
            for system in systems:
                latencies, note = await cross_instance_latency(system, args.latency_samples)
                f = figures[system.name]
                f.values["xlat_p50"] = pct(latencies, 0.5) * 1000
                f.values["xlat_p99"] = pct(latencies, 0.99) * 1000
                f.notes["xlat"] = note

        async def fan_out() -> None:
            for system in systems:
                print(f"[{system.name}] connecting {args.clients} clients over 2 instances ...")
                targets = [(system.urls[i % 2], system.token(f"u{i}")) for i in range(args.clients)]
                t0 = time.perf_counter()
                connected = await pool.connect(system.name, targets, subscribe=True)
                print(
                    f"    {connected} connected and subscribed in {time.perf_counter() - t0:.1f} s"
                )
                figures[system.name].values["clients"] = connected
            clients.update({s.name: int(figures[s.name].values["clients"]) for s in systems})

            # Both systems' clients stay connected (the idle side receives nothing);
            # runs go A B B A so drifting machine load weighs on both alike.
            order = [ours, base, base, ours][: 4 if args.rounds == 2 else 2]
            bursts: dict[str, list[Received]] = {s.name: [] for s in systems}
            paces: dict[str, list[Received]] = {s.name: [] for s in systems}
            for system in order:
                print(f"[{system.name}] burst of {args.events} change events ...")
                got = await burst(system, pool, args.events, args.concurrency)
                bursts[system.name].append(got)
                print(
                    f"    {got.changes:,} changes in {got.packets:,} packets in "
                    f"{got.last - got.first:.2f} s, server CPU {got.server_cpu:.2f} s ({got.note()})"
                )
                await asyncio.sleep(1.0)
            for system in order:
                print(
                    f"[{system.name}] paced {args.rate:g} events/s for {args.paced_seconds:g} s ..."
                )
                got = await paced(system, pool, args.rate, args.paced_seconds)
                paces[system.name].append(got)
                print(
                    f"    {len(got.latencies):,} receipts in {got.packets:,} packets, "
                    f"p50 {pct(got.latencies, 0.5) * 1000:.1f} ms, "
                    f"p99 {pct(got.latencies, 0.99) * 1000:.1f} ms, server CPU {got.server_cpu:.2f} s"
                    f" ({got.note()})"
                )
                await asyncio.sleep(1.0)
            for system in systems:
                f = figures[system.name]
                runs = bursts[system.name]
                span = sum(r.last - r.first for r in runs)
                changes = sum(r.changes for r in runs)
                f.values["burst_rate"] = changes / span if span > 0 else float("nan")
                f.values["burst_packets"] = sum(r.packets for r in runs) / len(runs)
                f.values["burst_s"] = span / len(runs)
                f.values["burst_cpu_ms"] = sum(r.server_cpu for r in runs) / len(runs) * 1000
                f.notes["burst"] = "; ".join(r.note() for r in runs)
                latencies = [x for r in paces[system.name] for x in r.latencies]
                f.values["paced_p50"] = pct(latencies, 0.5) * 1000
                f.values["paced_p99"] = pct(latencies, 0.99) * 1000
                f.values["paced_max"] = max(latencies, default=float("nan")) * 1000
                f.values["paced_packets"] = sum(r.packets for r in paces[system.name])
                f.values["paced_changes"] = sum(r.changes for r in paces[system.name])
                f.values["paced_cpu_ms"] = (
                    sum(r.server_cpu for r in paces[system.name]) / len(paces[system.name]) * 1000
                )
                f.notes["paced"] = "; ".join(r.note() for r in paces[system.name])

        async def bulk_save() -> None:
            nonlocal bulk
            print(f"[{ours.name}] bulk save of {args.records} leads ...")
            f = figures[ours.name]
            text = args.bulk_text.format(n=args.records)
            bulk = await bulk_ours(ours, pool, args.records, clients[ours.name], text)
            got = bulk.received
            f.values["bulk_rate"] = got.changes / bulk.seconds if bulk.seconds > 0 else 0.0
            f.values["bulk_s"] = bulk.seconds
            f.values["bulk_cpu"] = got.server_cpu
            f.notes["bulk"] = f"{bulk.path}; {got.note()}"
            print(f"    {bulk.path}: {got.changes:,} deliveries in {bulk.seconds:.2f} s")
            await asyncio.sleep(1.0)
            if bulk.captured:
                f = figures[base.name]
                per_record = [
                    {"version": c["version"], "changes": [c]}
                    for p in bulk.captured
                    for c in p["changes"]
                ]
                for key, payloads in (("bulk_rate", per_record), ("bulk_coalesced", bulk.captured)):
                    label = "one emit per record" if key == "bulk_rate" else "same coalesced events"
                    print(f"[{base.name}] bulk replay, {label} ({len(payloads)} emits) ...")
                    got, seconds = await bulk_baseline(base, pool, payloads, clients[base.name])
                    f.values[key] = got.changes / seconds if seconds > 0 else 0.0
                    f.values[key + "_s"] = seconds
                    f.values[key + "_cpu"] = got.server_cpu
                    f.notes[key] = got.note()
                    print(f"    {got.changes:,} deliveries in {seconds:.2f} s ({got.note()})")
                    await asyncio.sleep(1.0)
            await pool.close_connections()
            await asyncio.sleep(1.0)

        fresh: dict[str, Callable[[], HttpProcess]] = {
            ours.name: lambda: our_server(folder, "ours-mem", env),
            base.name: lambda: baseline_server(folder, "base-mem", redis_base.url),
        }

        async def memory(system: System) -> None:
            kb, before, after, connected = await memory_per_connection(
                pool, fresh[system.name], system.token, args.connections
            )
            f = figures[system.name]
            f.values["mem_kb"] = kb
            f.notes["mem"] = f"RSS {before / 1024:.0f} -> {after / 1024:.0f} MB, {connected}"
            print(f"    {system.name}: {f.notes['mem']} connections, {kb:.1f} KB each")

        if args.only == "all":
            await guarded("cross-instance latency", cross_instance(), failures)
            await guarded("fan-out", fan_out(), failures)
            if clients.get(ours.name):
                await guarded("bulk save", bulk_save(), failures)
        await pool.close_connections()
        if args.connections:
            print(f"memory: {args.connections} idle connections on a fresh process of each ...")
            for system in systems:
                await guarded(f"memory ({system.name})", memory(system), failures)

        if args.only == "all":
            print_report(args, figures[ours.name], figures[base.name], bulk)
        else:
            o, b = figures[ours.name].values, figures[base.name].values
            print(
                f"\nidle websocket memory, permessage-deflate "
                f"{'offered' if args.deflate else 'not offered'} by clients: leadstream "
                f"{o.get('mem_kb', float('nan')):.1f} KB, bare python-socketio "
                f"{b.get('mem_kb', float('nan')):.1f} KB per connection"
            )
        for failure in failures:
            print(f"  FAILED {failure}")
        print(f"\n(total {time.perf_counter() - started:.0f} s; logs were in {folder})")
    finally:
        await http.close()
        if pool is not None:
            pool.shutdown()
        await processes.aclose()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def print_report(
    args: argparse.Namespace, ours: Figures, base: Figures, bulk: BulkResult | None
) -> None:
    o, b = ours.values, base.values
    nan = float("nan")
    print()
    print(
        f"Realtime figures: {int(o.get('clients', 0))} clients over 2 instances "
        f"(baseline {int(b.get('clients', 0))}), {os.cpu_count()} CPUs, load generator on "
        f"the same machine ({args.client_procs} client processes), permessage-deflate "
        f"{'offered' if args.deflate else 'not offered'} by clients"
    )
    print(row("", "leadstream", "python-socketio", "ratio", "target"))
    print(
        row(
            f"burst, {args.events} events: changes delivered/s",
            f"{o.get('burst_rate', nan):,.0f}",
            f"{b.get('burst_rate', nan):,.0f}",
            ratio(o.get("burst_rate", nan), b.get("burst_rate", nan)),
            ">= 0.80x",
            _ratio_at_least(o.get("burst_rate", nan), b.get("burst_rate", nan), 0.8),
        )
    )
    print(
        row(
            "  packets per client, per burst",
            f"{o.get('burst_packets', 0) / max(o.get('clients', 1), 1):,.1f}",
            f"{b.get('burst_packets', 0) / max(b.get('clients', 1), 1):,.1f}",
            "",
            "",
        )
    )
    events = args.events
    print(
        row(
            "  server CPU per burst event, 2 instances (ms)",
            f"{o.get('burst_cpu_ms', nan) / events:.1f}",
            f"{b.get('burst_cpu_ms', nan) / events:.1f}",
            ratio(o.get("burst_cpu_ms", nan), b.get("burst_cpu_ms", nan)),
            "",
        )
    )
    for key, label in (("paced_p50", "p50"), ("paced_p99", "p99")):
        print(
            row(
                f"paced {args.rate:g}/s for {args.paced_seconds:g} s: latency {label} (ms)",
                f"{o.get(key, nan):.1f}",
                f"{b.get(key, nan):.1f}",
                ratio(o.get(key, nan), b.get(key, nan)),
                "<= 1.25x",
                _ratio_at_most(o.get(key, nan), b.get(key, nan), 1.25),
            )
        )
    paced_events = max(1, round(args.rate * args.paced_seconds))
    print(
        row(
            "  server CPU per paced event, 2 instances (ms)",
            f"{o.get('paced_cpu_ms', nan) / paced_events:.1f}",
            f"{b.get('paced_cpu_ms', nan) / paced_events:.1f}",
            ratio(o.get("paced_cpu_ms", nan), b.get("paced_cpu_ms", nan)),
            "",
        )
    )
    print(
        row(
            f"bulk save {args.records}: records delivered/s",
            f"{o.get('bulk_rate', nan):,.0f}",
            f"{b.get('bulk_rate', nan):,.0f}",
            ratio(o.get("bulk_rate", nan), b.get("bulk_rate", nan)),
            "(baseline: emit per record)",
        )
    )
    print(
        row(
            "  baseline sending our coalesced events",
            "",
            f"{b.get('bulk_coalesced', nan):,.0f}",
            ratio(o.get("bulk_rate", nan), b.get("bulk_coalesced", nan)),
            "(reference)",
        )
    )
    for key, label in (("xlat_p50", "p50"), ("xlat_p99", "p99")):
        print(
            row(
                f"cross-instance write->receipt {label} (ms)",
                f"{o.get(key, nan):.1f}",
                f"{b.get(key, nan):.1f}",
                ratio(o.get(key, nan), b.get(key, nan)),
                "p99 < 25 ms" if label == "p99" else "",
                o.get(key, nan) < 25 if label == "p99" else None,
            )
        )
    if args.connections:
        print(
            row(
                f"memory per idle connection, {args.connections} (KB)",
                f"{o.get('mem_kb', nan):.1f}",
                f"{b.get('mem_kb', nan):.1f}",
                ratio(o.get("mem_kb", nan), b.get("mem_kb", nan)),
                "< 30 KB",
                o.get("mem_kb", nan) < 30,
            )
        )
    print("\nnotes:")
    print(f"  load average (1 min) at start {args.load_start:.2f}, at end {os.getloadavg()[0]:.2f}")
    print(
        f"  paced changes per packet: ours "
        f"{o.get('paced_changes', 0) / max(o.get('paced_packets', 1), 1):.2f}, baseline "
        f"{b.get('paced_changes', 0) / max(b.get('paced_packets', 1), 1):.2f}"
    )
    print(
        f"  burst duration (mean of {args.rounds}): ours {o.get('burst_s', nan):.2f} s,"
        f" baseline {b.get('burst_s', nan):.2f} s"
    )
    print(
        f"  paced max latency: ours {o.get('paced_max', nan):.1f} ms,"
        f" baseline {b.get('paced_max', nan):.1f} ms"
    )
    if bulk is not None:
        print(
            f"  bulk: ours {o.get('bulk_s', nan):.2f} s via {bulk.path};"
            f" baseline per record {b.get('bulk_rate_s', nan):.2f} s,"
            f" coalesced {b.get('bulk_coalesced_s', nan):.2f} s"
        )
        print(
            f"  bulk server CPU (2 instances): ours {o.get('bulk_cpu', nan):.2f} s (search and"
            f" save included); baseline per record {b.get('bulk_rate_cpu', nan):.2f} s,"
            f" coalesced {b.get('bulk_coalesced_cpu', nan):.2f} s"
        )
    for name, fig in (("ours", ours), ("baseline", base)):
        for key, note in fig.notes.items():
            # Only what went wrong: lost samples, incomplete or dropped clients.
            if note and key != "mem" and (" lost" in note or not _all_complete(note)):
                print(f"  ! {name} {key}: {note}")
    if args.connections:
        print(f"  memory: ours {ours.notes.get('mem', '')}; baseline {base.notes.get('mem', '')}")


def _all_complete(note: str) -> bool:
    for part in note.split(";"):
        if "clients complete" in part:
            done, total = part.strip().split(" ")[0].split("/")
            return done == total
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="fan-out clients [1000]")
    parser.add_argument("--events", type=int, default=200, help="burst events [200]")
    parser.add_argument("--concurrency", type=int, default=20, help="burst requests in flight")
    parser.add_argument("--rate", type=float, default=10.0, help="paced events/s [10]")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="paced duration [10]")
    parser.add_argument("--records", type=int, default=1000, help="bulk save size [1000]")
    parser.add_argument(
        "--bulk-text", default="find {n} CTOs and save them", help="chat text of the bulk save"
    )
    parser.add_argument("--people", type=int, default=100_000, help="directory size [100000]")
    parser.add_argument("--latency-samples", type=int, default=200, help="cross-instance writes")
    parser.add_argument(
        "--connections", type=int, default=5000, help="idle connections for memory (0: skip)"
    )
    parser.add_argument("--client-procs", type=int, default=4, help="client processes [4]")
    parser.add_argument(
        "--rounds",
        type=int,
        choices=(1, 2),
        default=2,
        help="burst and paced runs per system: 2 = ours, baseline, baseline, ours [2]",
    )
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="clients offer permessage-deflate (browsers do; the servers then compress)",
    )
    parser.add_argument(
        "--only",
        choices=("all", "memory"),
        default="all",
        help="memory: only the idle-connection memory of each system (about a minute)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and logs")
    args = parser.parse_args()
    args.load_start = os.getloadavg()[0]
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
