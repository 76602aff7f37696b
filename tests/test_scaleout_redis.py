"""Two real server processes behind one real redis-server and one SQLite file:
events of one instance reach clients of the other."""

from __future__ import annotations

import aiohttp
from support import ServerProcess, bearer, connect_client, instances_env

EVENTS = ("leads:changes", "chat:done", "chat:delta", "leads:batch")


async def test_changes_and_chat_cross_instances(tmp_path, redis_server):
    env = instances_env(tmp_path / "shared", redis_server.url, LEADSTREAM_LOG_LEVEL="WARNING")
    async with (
        ServerProcess(tmp_path / "one", env) as one,
        ServerProcess(tmp_path / "two", env) as two,
    ):
        token = one.token()
        other_org = one.token("globex", "eve")
        watcher = await connect_client(two.url, {"token": token}, EVENTS)
        outsider = await connect_client(two.url, {"token": other_org}, EVENTS)
        tab_one = await connect_client(one.url, {"token": token}, EVENTS)
        watcher_log, outsider_log = watcher.log, outsider.log
        try:
            for client in (watcher, outsider):
                assert (await client.sio.call("leads:subscribe", {}, timeout=10))["ok"]
            async with aiohttp.ClientSession() as http:
                info = await (await http.get(two.url + "/api/info")).json()
                assert info["redis"] is True
                created = await http.post(
                    one.url + "/api/leads", json={"name": "Cross"}, headers=bearer(token)
                )
                assert created.status == 201
                # The page cache lives in Redis: both instances answer the same page.
                page_one = await (
                    await http.get(one.url + "/api/leads", headers=bearer(token))
                ).json()
                page_two = await (
                    await http.get(two.url + "/api/leads", headers=bearer(token))
                ).json()
                assert page_one == page_two and page_one["leads"][0]["name"] == "Cross"
            event = await watcher_log.wait_for("leads:changes")
            assert event["changes"][0]["lead"]["name"] == "Cross"

            # A reply generated on instance one reaches the user's tab on instance two.
            ack = await tab_one.sio.call("chat:send", {"text": "find 5 CTOs"}, timeout=10)
            done = await watcher_log.wait_for(
                "chat:done", lambda d: d["messageId"] == ack["messageId"]
            )
            assert done["stopped"] is False
            assert watcher_log.of("leads:batch")
            assert outsider_log.events == []
        finally:
            for client in (watcher, outsider, tab_one):
                await client.sio.disconnect()
