"""What a mass disconnect costs an asyncio server before any of our code runs.

`leadstream loadtest --drop` kills every client at once and times how long
`/healthz` takes to answer meanwhile (issue 12's target: 250 ms). This
script measures the floor under that figure: the same drop against servers
that do less and less than ours, all on the same machine, same run:

- `asyncio`: a bare `asyncio.Protocol` server that holds the connections and
  answers `GET /healthz` (no HTTP library at all); `uvloop`: the same on
  uvloop (the loop `leadstream serve` runs on);
- `aiohttp`: an aiohttp app with one websocket route that only reads until
  the client goes away, and `/healthz`;
- `takeover`: the same app, but each websocket leaves aiohttp after the
  upgrade for a bare protocol (what `realtime/websocket_frames.py` does);
- `leadstream`: `leadstream serve` (embedded defaults, `LEADSTREAM_PEOPLE=0`,
  uvloop), the clients doing the Socket.IO connect as the load test's do;
  `leadstream-asyncio`: the same on the standard loop
  (`LEADSTREAM_EVENT_LOOP=asyncio`).

For each, a client process opens `--sockets` connections (websockets
for the last two), waits until they are idle, and is killed; meanwhile
`/healthz` is asked every 20 ms, each time on a new connection (as a
liveness probe does). Reported: the slowest answer, and how long the
server took to close its sockets (its open descriptors, from `/proc`).

`--workers N` runs N server processes on the port (SO_REUSEPORT; for
`leadstream`, `serve --workers N` with a `redis-server` of its own) and
N client processes, killed together: on a box with N cores, the floor
under `leadstream loadtest --drop` against `serve --workers N`. Only the
`asyncio`, `uvloop` and `leadstream` kinds take it.

    python bench/disconnect_floor.py --sockets 10000
    python bench/disconnect_floor.py --sockets 20000 --workers 2 --kinds uvloop,leadstream
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from leadstream.server.auth import TokenSigner
from leadstream.server.cli.feed_socket import FeedSocket, Tally
from leadstream.server.cli.loadtest import open_fds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # process helpers
from support import RedisServer, free_port

SECRET = "disconnect-floor-bench-secret-0123456789abcdef"
PROBE_EVERY_S = 0.02
RELEASE_WAIT_S = 120
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"

BARE_ASYNCIO = textwrap.dedent(
    """
    import asyncio, sys

    class Held(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            if data.startswith(b"GET /healthz"):
                self.transport.write(
                    b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok"
                )
                self.transport.close()

    async def main():
        server = await asyncio.get_running_loop().create_server(
            Held, "127.0.0.1", int(sys.argv[1]), backlog=4096, reuse_port=True
        )
        print("ready", flush=True)
        await server.serve_forever()

    if sys.argv[2] == "uvloop":
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
    """
)

# argv: port, then "takeover" to hand each websocket to a bare protocol after the upgrade.
BARE_AIOHTTP = textwrap.dedent(
    """
    import asyncio, sys
    from aiohttp import web

    TAKEOVER = sys.argv[2:] == ["takeover"]

    async def healthz(request):
        return web.json_response({"status": "ok"})

    async def ws(request):
        response = web.WebSocketResponse()
        await response.prepare(request)
        if TAKEOVER:  # the connection leaves aiohttp
            request.transport.set_protocol(asyncio.Protocol())
            connection = request.protocol
            connection.transport = None
            connection.connection_lost(None)
            return response
        async for _ in response:
            pass
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/ws", ws)
    print("ready", flush=True)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, backlog=4096)
    """
)


WORKER_KINDS = ("asyncio", "uvloop", "leadstream", "leadstream-asyncio")


def server_commands(kind: str, port: int, workers: int) -> list[list[str]]:
    """The processes to start (the bare servers share the port by SO_REUSEPORT)."""
    if kind in ("asyncio", "uvloop"):
        return [[sys.executable, "-c", BARE_ASYNCIO, str(port), kind]] * workers
    if kind == "aiohttp":
        return [[sys.executable, "-c", BARE_AIOHTTP, str(port)]]
    if kind == "takeover":
        return [[sys.executable, "-c", BARE_AIOHTTP, str(port), "takeover"]]
    serve = [sys.executable, "-m", "leadstream", "serve", "--port", str(port)]
    return [serve + (["--workers", str(workers)] if workers > 1 else [])]


def server_env(kind: str) -> dict[str, str]:
    return {"LEADSTREAM_EVENT_LOOP": "asyncio" if kind == "leadstream-asyncio" else "uvloop"}


def clients_main(kind: str, port: int, sockets: int, ready_path: str) -> None:
    """A client process: open `sockets` connections, say so in `ready_path`, wait to be killed."""

    async def main() -> None:
        held: list[object] = []
        signer = TokenSigner(SECRET, default_ttl_s=3600)
        tally = Tally()
        gate = asyncio.Semaphore(100)

        async def one(index: int) -> None:
            # Spread over source addresses, as the load test does.
            local = f"127.0.0.{2 + index % 250}"
            async with gate:
                if kind in ("asyncio", "uvloop"):
                    _, writer = await asyncio.open_connection(
                        "127.0.0.1", port, local_addr=(local, 0)
                    )
                    held.append(writer)
                elif kind in ("aiohttp", "takeover"):
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1", port, local_addr=(local, 0)
                    )
                    writer.write(
                        b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        b"Sec-WebSocket-Version: 13\r\n\r\n"
                    )
                    await reader.readuntil(b"\r\n\r\n")
                    held.append(writer)
                else:
                    feed = FeedSocket(f"o{index // 100}", tally)
                    token = signer.issue(f"o{index // 100}", f"u{index}").token
                    await feed.open("127.0.0.1", port, token, local)
                    held.append(feed)

        await asyncio.gather(*(one(i) for i in range(sockets)))
        await asyncio.to_thread(Path(ready_path).write_text, str(len(held)))
        await asyncio.Event().wait()

    asyncio.run(main())


def probe(port: int) -> float:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(HEALTHZ)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    if b" 200 " not in answer.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"/healthz answered {answer[:80]!r}")
    return time.monotonic() - started


def measure(kind: str, sockets: int, workers: int) -> tuple[float, float, float]:
    """(slowest /healthz before the drop, slowest during it, release seconds)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as home, contextlib.ExitStack() as stack:
        redis_url = ""
        if workers > 1 and kind.startswith("leadstream"):  # serve --workers needs Redis
            redis = RedisServer(Path(home) / "redis")
            redis.start()
            stack.callback(redis.stop)
            redis_url = redis.url
        env = {
            **os.environ,
            "LEADSTREAM_DATA_DIR": home,
            "LEADSTREAM_STORE": f"sqlite:///{home}/leadstream.db",
            "LEADSTREAM_PEOPLE": "0",
            "LEADSTREAM_SECRET": SECRET,
            "LEADSTREAM_CONNECTIONS_PER_IP": "100000",
            "LEADSTREAM_RATE_HANDSHAKE_IP": "100000/1s",
            "LEADSTREAM_RATE_LIMITS": "off",  # the clients connect as fast as they can
            "LEADSTREAM_LOG_LEVEL": "WARNING",
            "REDIS_URL": redis_url,
        }
        servers = [
            subprocess.Popen(command, env={**env, **server_env(kind)}, stdout=subprocess.DEVNULL)
            for command in server_commands(kind, port, workers)
        ]
        pids = [server.pid for server in servers]  # and their children: serve's workers
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    probe(port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            readies = [Path(home) / f"clients-ready-{n}" for n in range(workers)]
            shares = [sockets // workers + (n < sockets % workers) for n in range(workers)]
            clients = [
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--clients",
                        kind,
                        str(port),
                        str(share),
                        str(ready),
                    ],
                    env=env,
                )
                for share, ready in zip(shares, readies, strict=True)
            ]
            while not all(ready.exists() for ready in readies):
                for process in clients:
                    if process.poll() is not None:
                        raise RuntimeError(f"the {kind} clients exited ({process.returncode})")
                time.sleep(0.2)
            time.sleep(3)  # connections settle
            idle = max(probe(port) for _ in range(10))
            base = open_fds(pids) - sockets
            started = time.monotonic()
            for process in clients:
                process.kill()
            slowest, released = 0.0, None
            while released is None or time.monotonic() - started < released + 0.1:
                if time.monotonic() - started > RELEASE_WAIT_S:
                    raise RuntimeError(f"{kind} did not close its sockets in {RELEASE_WAIT_S} s")
                slowest = max(slowest, probe(port))
                if released is None and open_fds(pids) <= base + 5 * workers:
                    released = time.monotonic() - started
                time.sleep(PROBE_EVERY_S)
            for process in clients:
                process.wait()
            return idle, slowest, released
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument(
        "--kinds", default="asyncio,uvloop,aiohttp,takeover,leadstream-asyncio,leadstream"
    )
    parser.add_argument("--workers", type=int, default=1, help="server (and client) processes")
    parser.add_argument("--clients", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients:
        kind, port, sockets, ready = args.clients
        clients_main(kind, int(port), int(sockets), ready)
        return
    kinds = args.kinds.split(",")
    if args.workers > 1 and set(kinds) - set(WORKER_KINDS):
        parser.error(f"--workers takes only the kinds {', '.join(WORKER_KINDS)}")
    over = f" over {args.workers} processes" if args.workers > 1 else ""
    print(
        f"{args.sockets:,} sockets{over} dropped at once; /healthz asked every 20 ms"
        " on a new connection"
    )
    print()
    print(
        "| server | slowest /healthz while idle | slowest /healthz during the drop | released in |"
    )
    print("|---|---:|---:|---:|")
    for kind in kinds:
        idle, slowest, released = measure(kind, args.sockets, args.workers)
        print(f"| {kind} | {1000 * idle:.0f} ms | {1000 * slowest:.0f} ms | {released:.2f} s |")


if __name__ == "__main__":
    main()
