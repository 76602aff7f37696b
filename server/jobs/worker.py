"""`leadstream worker`: a process that only runs background jobs.

It takes jobs from the Redis queue like the server processes do, and emits
job events (`export:ready`, `import:progress`, `import:done`, ...) to the users' connections on
any server through a write-only Socket.IO Redis manager. It needs
`REDIS_URL`: without Redis, jobs run inside `leadstream serve`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack

from leadstream.realtime import json_codec
from leadstream.realtime.emitter import Emitter
from leadstream.realtime.redis_manager import RoomShardedRedisManager
from leadstream.server.config import ConfigError, Settings
from leadstream.server.jobs.queue import RedisJobQueue
from leadstream.server.redis_connections import RedisConnections
from leadstream.server.services import export_service, import_service, job_queue, open_store

log = logging.getLogger(__name__)


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run jobs until SIGTERM/SIGINT (or `stop` is set)."""
    if not settings.redis_url:
        raise ConfigError("leadstream worker needs REDIS_URL (without it, serve runs the jobs)")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncExitStack() as stack:  # whatever start-up opened is closed, in reverse
        store = open_store(settings)
        stack.push_async_callback(store.close)  # also after a half-done open
        await store.open()
        connections = RedisConnections(settings.redis_url)
        stack.push_async_callback(connections.aclose)
        client = connections.client()
        queue = job_queue(settings, client)
        assert isinstance(queue, RedisJobQueue)
        emitter = Emitter(RoomShardedRedisManager(client, write_only=True, json=json_codec))
        export_service(settings, store, queue, emitter)
        import_service(settings, store, queue, emitter)
        stack.push_async_callback(queue.close)
        await queue.start()
        log.info("worker ready: %d jobs at a time", settings.job_concurrency)
        await stop.wait()
    log.info("worker stopped")


async def print_queue_stats(settings: Settings) -> None:
    """`leadstream jobs`: the Redis queue's queued, running, delayed and dead jobs."""
    if not settings.redis_url:
        raise ConfigError("leadstream jobs needs REDIS_URL (the in-process queue lives in serve)")
    connections = RedisConnections(settings.redis_url)
    client = connections.client()
    try:
        queue = RedisJobQueue(client, concurrency=1)
        await queue.start_group()
        stats = await queue.stats()
        print(" ".join(f"{name}={count}" for name, count in stats.items()))
        for entry_id, letter in await queue.dead_letters(10):
            print(f"dead {entry_id}: {letter['kind']} {letter['job']}: {letter['reason']}")
    finally:
        await connections.aclose()
