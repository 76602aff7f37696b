"""Figures of the walking skeleton (issue 2), on the embedded defaults:

- directory seeding time (default 100,000 people; `--people` for more);
- time from `chat:send` to the first `leads:batch` and to `chat:done` for
  "Find 100 CTOs in fintech with phone numbers", through a real Socket.IO
  client against the server on a real port.

Run: python bench/chat_latency.py [--people 100000] [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import socketio
from aiohttp import web

from leadstream.server.auth import TokenSigner
from leadstream.server.config import Settings
from leadstream.server.http.app import create_app
from leadstream.server.ratelimit import RateLimitSettings
from leadstream.server.seeding import seed_directory
from leadstream.server.services import open_store

REQUEST = "Find 100 CTOs in fintech with phone numbers"


async def measure_seeding(settings: Settings, people: int) -> float:
    store = open_store(settings)
    await store.open()
    started = time.perf_counter()
    await seed_directory(store, people)
    elapsed = time.perf_counter() - started
    await store.close()
    return elapsed


async def measure_chat(settings: Settings, runs: int) -> tuple[list[float], list[float], int]:
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    token = TokenSigner(settings.secret, default_ttl_s=3600).issue("bench", "bench").token
    sio = socketio.AsyncClient(reconnection=False)
    first_batch: asyncio.Future[float] | None = None
    done: asyncio.Future[float] | None = None
    rows = 0

    @sio.on("leads:batch")
    async def on_batch(data: dict) -> None:
        nonlocal rows
        rows += len(data["leads"])
        if first_batch is not None and not first_batch.done():
            first_batch.set_result(time.perf_counter())

    @sio.on("chat:done")
    async def on_done(data: dict) -> None:
        if done is not None and not done.done():
            done.set_result(time.perf_counter())

    await sio.connect(f"http://127.0.0.1:{port}", auth={"token": token}, transports=["websocket"])
    to_first, to_done = [], []
    loop = asyncio.get_running_loop()
    for _ in range(runs + 2):  # the first two warm caches and are dropped
        first_batch, done, rows = loop.create_future(), loop.create_future(), 0
        started = time.perf_counter()
        ack = await sio.call("chat:send", {"text": REQUEST}, timeout=30)
        assert ack["ok"], ack
        to_first.append(await first_batch - started)
        to_done.append(await done - started)
    await sio.disconnect()
    await runner.cleanup()
    return to_first[2:], to_done[2:], rows


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        settings = Settings(
            store_url=f"sqlite:///{data / 'leadstream.db'}",
            data_dir=data,
            secret="bench-secret-" + "b" * 32,
            # The bench sends faster than any user may.
            rate_limits=RateLimitSettings(enabled=False),
            people=args.people,
        )
        seconds = await measure_seeding(settings, args.people)
        print(
            f"seeding {args.people:,} people: {seconds:.1f} s ({args.people / seconds:,.0f} people/s)"
        )
        to_first, to_done, rows = await measure_chat(settings, args.runs)
        print(f'"{REQUEST}" ({rows} leads), {args.runs} runs:')
        print(f"  chat:send -> first leads:batch  {summary(to_first)}")
        print(f"  chat:send -> chat:done          {summary(to_done)}")


if __name__ == "__main__":
    asyncio.run(main())
