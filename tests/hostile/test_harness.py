"""The harness itself: the probe sees a healthy server as healthy."""

from __future__ import annotations

import aiohttp
from hostile_support import Target


async def test_probe_sees_an_idle_server_answer(target: Target) -> None:
    async with aiohttp.ClientSession() as http:
        async with target.probe() as probe:
            async with http.get(target.url + "/api/leads", headers=target.headers()) as response:
                assert response.status == 200
            await __import__("asyncio").sleep(0.3)
        probe.assert_healthy()
        assert target.rss() > 10_000_000
