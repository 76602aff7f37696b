"""Memory per idle websocket: what one connected Socket.IO socket costs the server.

Two measurements of the same thing (issue 12, items 1 and 4):

- `process` (default): a real `leadstream serve` (embedded defaults,
  `LEADSTREAM_PEOPLE=0`, no per-address limit) started as a process; a
  separate client process opens `--sockets` raw Engine.IO v4 websockets and
  does the Socket.IO connect with a token, then holds them idle. The
  server's RSS delta (from `/proc`) divided by the sockets is the figure.
- `objects`: the app built in this process (`create_app`, the same
  start-up, the collector frozen after it as `serve` does), the same client
  process; reports the objects a full collection walks per socket
  (`gc.get_objects()`, frozen start-up objects excluded) and, by tracemalloc,
  the lines that allocated the bytes each socket keeps.

Both warm up with a few hundred sockets opened and closed first, so lazily
built state and grown arenas are not charged to the measured ones.

To measure another tree (e.g. `git archive HEAD | tar -x -C /tmp/before/leadstream`),
put its parent first on the path: `PYTHONPATH=/tmp/before python bench/socket_memory.py`.

    python bench/socket_memory.py --sockets 5000
    python bench/socket_memory.py --sockets 5000 --mode objects --top 25
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import os
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # process helpers
from support import ServerProcess, free_port, rss_kb

SECRET = "socket-memory-bench-secret-0123456789abcdef"
WS_PATH = "/socket.io/?EIO=4&transport=websocket"
SETTLE_S = 3.0
WARM_SOCKETS = 300


# ------------------------------------------------------------------ client process


class IdleClients:
    """Runs in the client process: opens raw Socket.IO websockets and keeps them
    idle (answering pings), spread over loopback source addresses."""

    def __init__(self, url: str) -> None:
        self.url = url.replace("http", "ws", 1) + WS_PATH
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.readers: list[asyncio.Task[None]] = []
        self.sessions: dict[str, aiohttp.ClientSession] = {}

    def _session(self, index: int) -> aiohttp.ClientSession:
        address = f"127.0.{1 + index // 20000}.{2 + (index // 200) % 250}"
        if address not in self.sessions:
            self.sessions[address] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, local_addr=(address, 0))
            )
        return self.sessions[address]

    async def open(self, tokens: list[str]) -> dict[str, Any]:
        gate = asyncio.Semaphore(100)
        failures: list[str] = []

        async def one(index: int, token: str) -> None:
            async with gate:
                try:
                    ws = await self._session(len(self.sockets) + index).ws_connect(
                        self.url, max_msg_size=0
                    )
                    opening = await ws.receive_str(timeout=30)
                    if not opening.startswith("0"):
                        raise ConnectionError(opening[:80])
                    await ws.send_str("40" + orjson.dumps({"token": token}).decode())
                    answer = await ws.receive_str(timeout=30)
                    if not answer.startswith("40"):
                        raise ConnectionError(answer[:160])
                except (aiohttp.ClientError, ConnectionError, TimeoutError, OSError) as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return
                self.sockets.append(ws)
                self.readers.append(asyncio.create_task(self._idle(ws)))

        await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))
        return {"open": len(self.sockets), "failed": len(failures), "errors": failures[:3]}

    async def _idle(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT and message.data == "2":
                await ws.send_str("3")

    async def close(self) -> dict[str, Any]:
        for reader in self.readers:
            reader.cancel()
        gate = asyncio.Semaphore(200)

        async def one(ws: aiohttp.ClientWebSocketResponse) -> None:
            async with gate:
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    await asyncio.wait_for(ws.close(), 5)

        await asyncio.gather(*(one(ws) for ws in self.sockets))
        closed = len(self.sockets)
        self.sockets, self.readers = [], []
        return {"closed": closed}

    async def shutdown(self) -> None:
        await self.close()
        for session in self.sessions.values():
            await session.close()


def client_main(conn: Connection, url: str) -> None:
    async def serve() -> None:
        clients = IdleClients(url)
        while True:
            command = await asyncio.to_thread(conn.recv)
            if command["op"] == "open":
                conn.send(await clients.open(command["tokens"]))
            elif command["op"] == "close":
                conn.send(await clients.close())
            else:
                await clients.shutdown()
                conn.send({})
                return

    asyncio.run(serve())


class ClientProcess:
    """The client process, seen from the measuring side."""

    def __init__(self, url: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.proc = context.Process(target=client_main, args=(child, url), daemon=True)
        self.proc.start()
        child.close()

    async def ask(self, **command: Any) -> dict[str, Any]:
        self.conn.send(command)
        return await asyncio.to_thread(self.conn.recv)

    async def open(self, tokens: list[str]) -> int:
        result = await self.ask(op="open", tokens=tokens)
        if result["failed"]:
            print(f"  {result['failed']} sockets failed to connect: {result['errors']}")
        return result["open"]

    async def stop(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            await self.ask(op="exit")
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()


# ------------------------------------------------------------------ measuring side


def tokens(count: int, start: int = 0) -> list[str]:
    from leadstream.server.auth import TokenSigner

    signer = TokenSigner(SECRET, default_ttl_s=3600)
    return [signer.issue(f"mem{i // 100}", f"u{i}").token for i in range(start, start + count)]


def server_env(data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LEADSTREAM_DATA_DIR": str(data_dir),
        "LEADSTREAM_STORE": f"sqlite:///{data_dir}/leadstream.db",
        "LEADSTREAM_SECRET": SECRET,
        "LEADSTREAM_PEOPLE": "0",
        "LEADSTREAM_CONNECTIONS_PER_IP": "100000",
        "LEADSTREAM_RATE_HANDSHAKE_IP": "100000/1s",
    }


async def measure_process(count: int) -> None:
    """RSS per socket of a `leadstream serve` process."""
    with tempfile.TemporaryDirectory(prefix="socket-memory-") as tmp:
        folder = Path(tmp)
        async with ServerProcess(folder, server_env(folder)) as server:
            clients = ClientProcess(server.url)
            try:
                await clients.open(tokens(WARM_SOCKETS, start=count))
                await clients.ask(op="close")
                await asyncio.sleep(SETTLE_S)
                before = rss_kb(server.pid)
                started = time.monotonic()
                opened = await clients.open(tokens(count))
                took = time.monotonic() - started
                await asyncio.sleep(SETTLE_S)
                after = rss_kb(server.pid)
                print(
                    f"serve process: {opened} idle sockets (connected in {took:.1f} s), "
                    f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MB, "
                    f"{(after - before) / max(opened, 1):.1f} KB per socket"
                )
            finally:
                await clients.stop()


async def measure_objects(count: int, top: int) -> None:
    """Objects and traced bytes per socket, the app built in this process."""
    from aiohttp import web

    from leadstream.server.config import Settings
    from leadstream.server.http.app import create_app

    with tempfile.TemporaryDirectory(prefix="socket-memory-") as folder:
        settings = Settings.from_env(server_env(Path(folder)))
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()  # listening: clients may connect
        url = f"http://127.0.0.1:{port}"
        clients = ClientProcess(url)
        try:
            await clients.open(tokens(WARM_SOCKETS, start=count))
            await clients.ask(op="close")
            await asyncio.sleep(SETTLE_S)
            gc.collect()
            types_before = Counter(type(o).__qualname__ for o in gc.get_objects())
            objects_before = types_before.total()
            rss_before = rss_kb(os.getpid())
            tracemalloc.start(1)
            traced_before = tracemalloc.take_snapshot()
            opened = await clients.open(tokens(count))
            await asyncio.sleep(SETTLE_S)
            gc.collect()
            types_after = Counter(type(o).__qualname__ for o in gc.get_objects())
            objects_after = types_after.total()
            traced_after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            rss_after = rss_kb(os.getpid())
            n = max(opened, 1)
            print(
                f"in-process app: {opened} idle sockets, "
                f"{(objects_after - objects_before) / n:.1f} GC-tracked objects per socket "
                f"({objects_after:,} walked by a full collection), "
                f"RSS {(rss_after - rss_before) / n:.1f} KB per socket (tracemalloc on)"
            )
            types_after.subtract(types_before)
            kinds = ", ".join(
                f"{name} {count / n:.1f}" for name, count in types_after.most_common(top)
            )
            print(f"tracked objects per socket by type: {kinds}")
            stats = traced_after.compare_to(traced_before, "lineno")
            total = sum(s.size_diff for s in stats)
            print(f"traced: {total / n / 1024:.2f} KB per socket; largest lines:")
            for stat in stats[:top]:
                frame = stat.traceback[0]
                where = "/".join(Path(frame.filename).parts[-3:])
                print(
                    f"  {stat.size_diff / n:8.0f} B {stat.count_diff / n:6.2f} blocks  "
                    f"{where}:{frame.lineno}"
                )
        finally:
            await clients.stop()
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--mode", choices=("process", "objects"), default="process")
    parser.add_argument("--top", type=int, default=25, help="tracemalloc lines shown [25]")
    args = parser.parse_args()
    if args.mode == "process":
        asyncio.run(measure_process(args.sockets))
    else:
        asyncio.run(measure_objects(args.sockets, args.top))


if __name__ == "__main__":
    main()
