"""Shared fixtures: a real server on a real port, real Socket.IO clients,
real SQLite files in temporary folders.

Seeding the 100,000-person directory takes a couple of seconds, so it is done
once per session into a template database that each test copies.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fakes.openai_server import FakeOpenAI
from fakes.rocketreach_server import FakeRocketReach
from support import Client, RedisCluster, RedisServer, connect_client

from leadstream.server.auth import TokenSigner
from leadstream.server.config import Settings
from leadstream.server.http.app import create_app
from leadstream.server.seeding import seed_directory
from leadstream.store.sqlite import SqliteStore

DIRECTORY_PEOPLE = 100_000
SECRET = "test-secret-" + "x" * 32


@pytest.fixture(scope="session")
def directory_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file holding the default-size directory (and nothing else)."""
    path = tmp_path_factory.mktemp("template") / "leadstream.db"

    async def build() -> None:
        store = SqliteStore(path)
        await store.open()
        await seed_directory(store, DIRECTORY_PEOPLE)
        await store.close()

    asyncio.run(build())
    return path


@pytest.fixture
def settings(tmp_path: Path, directory_db: Path) -> Settings:
    db = tmp_path / "data" / "leadstream.db"
    db.parent.mkdir(parents=True)
    shutil.copy(directory_db, db)
    return Settings(
        store_url=f"sqlite:///{db}",
        data_dir=tmp_path / "data",
        secret=SECRET,
        people=DIRECTORY_PEOPLE,
        delta_flush_ms=10,
    )


@pytest.fixture
def signer(settings: Settings) -> TokenSigner:
    return TokenSigner(settings.secret, default_ttl_s=3600)


@pytest.fixture
def token(signer: TokenSigner) -> Callable[..., str]:
    def make(org: str = "acme", user: str = "alice", ttl: int | None = None) -> str:
        return signer.issue(org, user, ttl).token

    return make


@pytest.fixture
async def serve_app() -> AsyncIterator[Callable[[web.Application], Awaitable[TestServer]]]:
    """Start any aiohttp app on a free port; every one is closed after the test."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> TestServer:
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
def start_server(
    serve_app: Callable[[web.Application], Awaitable[TestServer]],
) -> Callable[..., Awaitable[TestServer]]:
    """Start the app (optionally with other settings or parts) on a free port."""

    async def start(settings: Settings, **parts: Any) -> TestServer:
        return await serve_app(create_app(settings, **parts))

    return start


@pytest.fixture
async def server(
    settings: Settings, start_server: Callable[..., Awaitable[TestServer]]
) -> TestServer:
    return await start_server(settings)


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """Connect real Socket.IO clients (recording every server event) to a test
    server; every one is disconnected after the test."""
    clients: list[Client] = []

    async def open_client(server: TestServer, token: str | None) -> Client:
        auth = {"token": token} if token is not None else None
        client = await connect_client(str(server.make_url("/")), auth)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.sio.disconnect()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real `redis-server` of this test's own, on a free port: the test may
    stop and restart it (`stop()`, `start()`) without touching any other."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real `redis-server` for every test of a module that asks for it:
    for many short tests that only need one running; each flushes what it
    uses, and none may stop it (those take `redis_server`)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A real 3-primary Redis Cluster of this test's own, on free ports."""
    cluster = RedisCluster(tmp_path / "cluster")
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """The fake OpenAI server (tests/fakes), started for this test."""
    fake = FakeOpenAI(api_key="sk-test")
    await fake.start()
    # Hanging answers sleep in the fake's handlers after their clients left;
    # do not wait aiohttp's default 60 s for them when the fake stops.
    assert fake._runner is not None
    fake._runner._shutdown_timeout = 0.5
    yield fake
    await fake.stop()


@pytest.fixture
async def fake_rocketreach() -> AsyncIterator[FakeRocketReach]:
    """The fake RocketReach API (tests/fakes), started for this test."""
    fake = FakeRocketReach()
    await fake.start()
    yield fake
    await fake.stop()
