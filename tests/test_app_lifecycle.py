"""Start-up and shutdown of the app (`ServerLifecycle`, server/http/lifecycle.py):
whatever start-up opened is closed at shutdown, and also when start-up fails
part way, as seen from outside: the SQLite files held open by the process
(/proc/self/fd) and the asyncio tasks left running."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
import socketio
from aiohttp.test_utils import TestServer
from redis.exceptions import ConnectionError as RedisConnectionError
from support import RedisServer, free_port, settings_with

from leadstream.server.auth import TokenSigner
from leadstream.server.config import Settings
from leadstream.server.http.app import create_app


def open_files_under(folder: Path) -> list[str]:
    """The files under `folder` this process holds open (the database, its WAL...)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed since listed
        if target.startswith(f"{folder}/"):
            found.append(target)
    return sorted(found)


def database_folder(settings: Settings) -> Path:
    return Path(settings.store_url.removeprefix("sqlite:///")).parent


async def test_shutdown_closes_the_store_and_stops_every_task(settings: Settings) -> None:
    folder = database_folder(settings)
    before = asyncio.all_tasks()
    server = TestServer(create_app(settings))
    await server.start_server()
    assert any(name.endswith("leadstream.db") for name in open_files_under(folder))
    started = {task.get_name() for task in asyncio.all_tasks() - before}
    assert {"lead-change-feed", "maintenance"} <= started

    await server.close()
    assert open_files_under(folder) == []
    assert not [task.get_name() for task in asyncio.all_tasks() - before if not task.done()]


async def test_a_failed_start_up_closes_what_it_had_opened(settings: Settings) -> None:
    # Nothing listens there: the Redis job queue fails to start, after the
    # store, the socket server and the change feed did.
    unreachable = settings_with(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    folder = database_folder(settings)
    before = asyncio.all_tasks()
    server = TestServer(create_app(unreachable))
    with pytest.raises(RedisConnectionError):
        await server.start_server()
    try:
        assert open_files_under(folder) == []
        assert not [task.get_name() for task in asyncio.all_tasks() - before if not task.done()]
    finally:
        await server.close()


async def test_shutdown_closes_every_redis_connection(
    settings: Settings, redis_server: RedisServer, signer: TokenSigner
) -> None:
    server = TestServer(create_app(settings_with(settings, redis_url=redis_server.url)))
    await server.start_server()
    # Use every client: readiness pings the shared one, a socket starts the
    # Socket.IO manager's subscriber, a REST call the rate limiter's.
    async with aiohttp.ClientSession() as http:
        ready = await http.get(server.make_url("/readyz"))
        assert ready.status == 200, await ready.text()
        info = await http.get(server.make_url("/api/info"))
        assert info.status == 200
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(
        str(server.make_url("/")),
        auth={"token": signer.issue("acme", "alice").token},
        transports=["websocket"],
    )
    await sio.disconnect()
    watcher = aioredis.Redis.from_url(redis_server.url)
    try:
        own = await watcher.client_id()
        assert [c for c in await watcher.client_list() if int(c["id"]) != own]

        await server.close()
        async with asyncio.timeout(10):  # the server sees each close as the FIN arrives
            while [c for c in await watcher.client_list() if int(c["id"]) != own]:
                await asyncio.sleep(0.05)
    finally:
        await watcher.aclose()
        await server.close()
