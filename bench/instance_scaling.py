"""Instance scaling of the Socket.IO manager (issue 11): python-socketio's
`AsyncRedisManager` (every emit on one channel) beside ours
(`RoomShardedRedisManager`, a channel per room, subscribed only where the
room has members), on one redis-server.

For each manager and each instance count N (`--instances`, default 1,2,4),
N server processes run (`serve` below: an `AsyncServer` on aiohttp with the
manager, orjson, nothing else), each hosting `--clients` websocket clients
of its own org (each client in the org room and in a room of its own, as
ours are). Every instance emits `leads:changes` (one lead, ~400 bytes) to
its own org room at `--rate` events/s for `--seconds`: the same write rate
per instance. Figures, from /proc (utime + stime):

1. server CPU per delivered change, per instance: an instance's CPU over the
   window divided by the changes its own clients received, averaged over the
   N instances; and its ratio to N = 1 (target for ours: 4 instances within
   1.2x of 1);
2. CPU per change of a room the instance has no member of: one more server
   process with no client at all runs beside the N; its CPU over the window,
   less its CPU over an idle window of the same length, divided by the
   changes the N instances emitted (target for ours: under 5 us,
   indistinguishable from idle). CPU comes in clock ticks (10 ms), so 0.0
   means less than 10 ms over all those changes (under 3 us at N = 4).

The load generator (the clients) runs in this process, on the same cores,
so the absolute numbers move with the machine's load; the ratios less.

Run: python bench/instance_scaling.py [--instances 1,2,4] [--clients 20]
     [--rate 100] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
LEAD = {
    "id": "lead-0000000000",
    "name": "Ada Lovelace",
    "title": "Chief Technology Officer",
    "company": "Analytical Engines Ltd",
    "email": "ada@analytical.example",
    "phone": "+44 20 7946 0000",
    "city": "London",
    "country": "United Kingdom",
    "industry": "fintech",
    "source": "directory",
    "personId": "p-000000",
    "createdAt": "2026-01-01T00:00:00Z",
}


# -- the server process -------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    """One instance: clients join `org:{their org}` and a room of their own;
    `POST /emit {rate, seconds}` emits to this instance's org room."""
    import redis.asyncio as aioredis
    import socketio
    from aiohttp import web

    from leadstream.realtime import json_codec
    from leadstream.realtime.redis_manager import RoomShardedRedisManager

    if args.manager == "stock":
        manager: Any = socketio.AsyncRedisManager(args.redis, json=json_codec)
    else:
        manager = RoomShardedRedisManager(aioredis.Redis.from_url(args.redis))
    sio = socketio.AsyncServer(
        async_mode="aiohttp", client_manager=manager, json=json_codec, logger=False
    )
    app = web.Application()
    sio.attach(app)

    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, str]) -> None:
        await sio.enter_room(sid, f"org:{auth['org']}")
        await sio.enter_room(sid, f"user:{auth['org']}:{sid}")

    async def emit(request: web.Request) -> web.Response:
        body = await request.json()
        interval = 1 / body["rate"]
        count = int(body["rate"] * body["seconds"])
        start = time.perf_counter()
        for n in range(count):
            delay = start + n * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            change = {"op": "insert", "version": n + 1, "id": LEAD["id"], "lead": LEAD}
            await sio.emit(
                "leads:changes", {"version": n + 1, "changes": [change]}, to=f"org:{args.org}"
            )
        return web.json_response({"emitted": count})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def start_manager(app: web.Application) -> None:
        # python-socketio starts the manager on the first Socket.IO request;
        # the instance without clients must listen too.
        sio.manager_initialized = True
        sio.manager.initialize()

    sio.on("connect", connect)
    app.on_startup.append(start_manager)
    app.router.add_post("/emit", emit)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


# -- the driver ---------------------------------------------------------------


class Instance:
    """A `serve` process (its log in `folder`) and its clients."""

    def __init__(self, folder: Path, redis_url: str, manager: str, org: str) -> None:
        from support import HttpProcess  # on the path in the driver only (`main`)

        argv = [
            sys.executable,
            __file__,
            "serve",
            "--redis",
            redis_url,
            "--manager",
            manager,
            "--org",
            org,
        ]
        self.server = HttpProcess(argv, folder, {}, name=org, ready_path="/healthz")
        self.url = self.server.url
        self.org = org
        self.received = 0
        self._readers: list[asyncio.Task[None]] = []
        self._sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def add_clients(self, http: aiohttp.ClientSession, count: int) -> None:
        ws_url = f"ws://127.0.0.1:{self.server.port}/socket.io/?EIO=4&transport=websocket"
        for _ in range(count):
            ws = await http.ws_connect(ws_url)
            assert (await ws.receive_str()).startswith("0{")
            await ws.send_str("40" + json.dumps({"org": self.org}))
            assert (await ws.receive_str()).startswith("40")
            self._sockets.append(ws)
            self._readers.append(asyncio.create_task(self._read(ws)))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            if msg.data.startswith("42"):
                self.received += 1
            elif msg.data == "2":
                await ws.send_str("3")

    def cpu(self) -> float:
        from support import cpu_seconds

        return cpu_seconds(self.server.pid)

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in self._sockets), return_exceptions=True)
        await self.server.stop()


async def run_case(
    folder: Path, redis_url: str, manager: str, count: int, args: argparse.Namespace
) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        hosts = [Instance(folder, redis_url, manager, f"org{n}") for n in range(count)]
        empty = Instance(folder, redis_url, manager, "nobody")
        try:
            await asyncio.gather(*(instance.server.start() for instance in (*hosts, empty)))
            for instance in hosts:
                await instance.add_clients(http, args.clients)
            await asyncio.sleep(0.5)
            # The empty instance at rest, for as long as the loaded window.
            idle_start = empty.cpu()
            await asyncio.sleep(args.seconds)
            idle = empty.cpu() - idle_start

            before = [instance.cpu() for instance in hosts]
            empty_before = empty.cpu()
            body = {"rate": args.rate, "seconds": args.seconds}
            replies = await asyncio.gather(
                *(http.post(instance.url + "/emit", json=body) for instance in hosts)
            )
            emitted = sum([(await reply.json())["emitted"] for reply in replies])
            await asyncio.sleep(0.5)  # the last deliveries
            used = [instance.cpu() - start for instance, start in zip(hosts, before, strict=True)]
            empty_used = empty.cpu() - empty_before - idle
            per_delivery = [
                cpu / max(1, instance.received) for cpu, instance in zip(used, hosts, strict=True)
            ]
            delivered = sum(instance.received for instance in hosts)
            expected = emitted * args.clients
            return {
                "us_per_delivery": mean(per_delivery) * 1e6,
                "us_per_foreign_change": max(0.0, empty_used) / emitted * 1e6,
                "delivered_share": delivered / expected,
            }
        finally:
            for instance in (*hosts, empty):
                await instance.close()


async def drive(args: argparse.Namespace, folder: Path, redis_url: str) -> None:
    counts = [int(n) for n in args.instances.split(",")]
    print(
        f"clients per instance {args.clients}, {args.rate} changes/s per instance, "
        f"{args.seconds}s windows; load average {os.getloadavg()[0]:.2f} (shared machine)"
    )
    print(f"{'manager':8} {'N':>2} {'us/delivery':>12} {'vs N=1':>7} {'us/foreign':>11} {'got':>6}")
    for manager in ("stock", "rooms"):
        first = None
        for count in counts:
            figures = await run_case(folder, redis_url, manager, count, args)
            first = first or figures["us_per_delivery"]
            print(
                f"{manager:8} {count:>2} {figures['us_per_delivery']:>12.1f} "
                f"{figures['us_per_delivery'] / first:>6.2f}x "
                f"{figures['us_per_foreign_change']:>11.1f} "
                f"{figures['delivered_share']:>6.1%}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    server = sub.add_parser("serve", help="one server instance (started by the bench)")
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--redis", required=True)
    server.add_argument("--manager", choices=("stock", "rooms"), required=True)
    server.add_argument("--org", required=True)
    parser.add_argument("--instances", default="1,2,4")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args)
        return
    # The tests' process helpers, here only (the `serve` processes do not need them).
    sys.path.insert(0, str(TESTS))
    from support import RedisServer

    with tempfile.TemporaryDirectory(prefix="instance-scaling-") as tmp:
        folder = Path(tmp)
        redis = RedisServer(folder / "redis")
        redis.start()
        try:
            asyncio.run(drive(args, folder, redis.url))
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
