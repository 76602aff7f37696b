"""Hostile-input tests: `leadstream serve` as a real process on the embedded
defaults, attacked through its real port while a probe times `/healthz`
(see `hostile_support`)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hostile_support import SECRET, Target, hostile_env
from support import ServerProcess

from leadstream.server.auth import TokenSigner


@pytest.fixture
async def start_target(
    tmp_path: Path, directory_db: Path
) -> AsyncIterator[Callable[..., Awaitable[Target]]]:
    """Start `leadstream serve` (the 100,000-person directory, copied) with
    optional environment overrides; stopped after the test."""
    servers: list[ServerProcess] = []

    async def start(**overrides: str) -> Target:
        data = tmp_path / f"data{len(servers)}"
        data.mkdir(mode=0o700)
        shutil.copy(directory_db, data / "leadstream.db")
        server = ServerProcess(tmp_path / f"cwd{len(servers)}", hostile_env(data, **overrides))
        await server.start()
        servers.append(server)
        return Target(server, TokenSigner(SECRET, default_ttl_s=3600))

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def target(start_target: Callable[..., Awaitable[Target]]) -> Target:
    """`leadstream serve` on its embedded defaults."""
    return await start_target()
