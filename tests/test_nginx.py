"""A real load balancer: two `leadstream serve` processes behind Debian's
nginx running the shipped deploy/nginx.conf, with a real redis-server.

Clients come from different loopback addresses (127.0.0.N), which the
config's `hash $remote_addr` spreads over the instances: websocket clients
(the Upgrade passes through) and long-polling clients (every request of a
session must reach the same instance: sticky). Chat and live updates work
through it, and when one instance stops, its clients reconnect through nginx
to the other and catch up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import socketio
from support import (
    EventLog,
    FeedMirror,
    Nginx,
    Scrape,
    ServerProcess,
    bearer,
    fresh_load,
    instances_env,
    recorder,
)


class Tab:
    """One browser tab: a Socket.IO client from its own address, with its feed mirror."""

    def __init__(self, address: str, transport: str, token: str, base_url: str) -> None:
        connector = aiohttp.TCPConnector(local_addr=(address, 0))
        self.http = aiohttp.ClientSession(connector=connector, headers=bearer(token))
        self.transport = transport
        self.sio = socketio.AsyncClient(
            http_session=self.http, reconnection=True, reconnection_delay=0.2
        )
        self.log = EventLog()
        self.sio.on("chat:done", recorder(self.log, "chat:done"))
        self.mirror = FeedMirror(self.sio, self.http, base_url)
        self.token = token
        self.base_url = base_url

    async def open(self) -> None:
        await self.sio.connect(
            self.base_url, auth={"token": self.token}, transports=[self.transport]
        )
        await self.mirror.start()

    async def close(self) -> None:
        self.mirror.order.close()
        await self.sio.disconnect()
        await self.http.close()


async def sockets_on(http: aiohttp.ClientSession, server: ServerProcess) -> int:
    scrape = await Scrape.of(http, server.url + "/metrics")
    return int(scrape.value("leadstream_sockets_connected"))


@pytest.fixture
async def deployment(tmp_path, redis_server) -> AsyncIterator[tuple[ServerProcess, ...]]:
    env = instances_env(
        tmp_path / "shared",
        redis_server.url,
        LEADSTREAM_TRUSTED_PROXY_HOPS="1",
        LEADSTREAM_ORG_TIERS="acme=enterprise",
    )
    async with ServerProcess(tmp_path / "a", env) as one, ServerProcess(tmp_path / "b", env) as two:
        yield one, two


async def test_chat_live_updates_and_failover_through_nginx(tmp_path, deployment):
    one, two = deployment
    nginx = Nginx(tmp_path / "nginx", [one.port, two.port])
    nginx.start()
    token = one.token()
    tabs: list[Tab] = []
    try:
        async with aiohttp.ClientSession(headers=bearer(token)) as http:
            # Tabs from new addresses until both instances hold some of them.
            for n in range(2, 40):
                tab = Tab(f"127.0.0.{n}", ("websocket", "polling")[n % 2], token, nginx.url)
                await tab.open()
                tabs.append(tab)
                counts = [await sockets_on(http, server) for server in (one, two)]
                transports = {t.transport for t in tabs}
                if len(tabs) >= 4 and min(counts) > 0 and transports == {"websocket", "polling"}:
                    break
            assert min(counts) > 0, counts
            assert sum(counts) == len(tabs)

            # Chat over long-polling: the session's requests all reach one instance.
            polling = next(t for t in tabs if t.transport == "polling")
            await chat(polling)

            # Live updates written through nginx reach every tab on both instances.
            await write(http, nginx.url, "live", 12)
            await settle(http, nginx.url, tabs)
            assert all(t.mirror.resyncs == 1 for t in tabs)

            # One instance dies (SIGKILL): its tabs reconnect through nginx to the other.
            victim = one if await sockets_on(http, one) > 0 else two
            survivor = two if victim is one else one
            assert victim.process is not None
            victim.process.kill()
            victim.process.wait()
            async with asyncio.timeout(60):
                while await sockets_on(http, survivor) < len(tabs):
                    await asyncio.sleep(0.2)
            for tab in tabs:
                await tab.mirror.resync()  # as the widget does on `connect`
            await write(http, nginx.url, "after", 8)
            await settle(http, nginx.url, tabs)
            await chat(polling)
            await chat(next(t for t in tabs if t.transport == "websocket"))
    finally:
        # At once: a long-polling client's disconnect waits for its pending poll.
        await asyncio.gather(*(tab.close() for tab in tabs))
        nginx.stop()


async def chat(tab: Tab) -> None:
    ack = await tab.sio.call("chat:send", {"text": "find 5 CTOs"}, timeout=20)
    assert ack["ok"], ack
    done = await tab.log.wait_for("chat:done", lambda d: d["messageId"] == ack["messageId"])
    assert done["stopped"] is False


async def write(http: aiohttp.ClientSession, url: str, prefix: str, count: int) -> None:
    for n in range(count):
        async with http.post(url + "/api/leads", json={"name": f"{prefix} {n}"}) as response:
            assert response.status == 201, await response.text()


async def settle(http: aiohttp.ClientSession, url: str, tabs: list[Tab]) -> None:
    expected, version = await fresh_load(http, url)
    async with asyncio.timeout(20):
        while any(t.mirror.version < version for t in tabs):
            await asyncio.sleep(0.05)
    for tab in tabs:
        assert tab.mirror.leads == expected
