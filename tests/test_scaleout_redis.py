"""Two real server processes behind one real redis-server and one SQLite file:
events of one instance reach clients of the other."""

from __future__ import annotations

import aiohttp
import socketio
from support import EventLog, ServerProcess, bearer, recorder


async def client_of(url: str, token: str) -> tuple[socketio.AsyncClient, EventLog]:
    sio = socketio.AsyncClient(reconnection=False)
    log = EventLog()
    for event in ("leads:changes", "chat:done", "chat:delta", "leads:batch"):
        sio.on(event, recorder(log, event))
    await sio.connect(url, auth={"token": token}, transports=["websocket"])
    return sio, log


async def test_changes_and_chat_cross_instances(tmp_path, redis_server):
    env = {
        "REDIS_URL": redis_server.url,
        "LEADSTREAM_STORE": f"sqlite:///{tmp_path / 'shared' / 'leadstream.db'}",
        "LEADSTREAM_DATA_DIR": str(tmp_path / "shared"),
        "LEADSTREAM_SECRET": "scale-out-secret-" + "z" * 32,
        "LEADSTREAM_PEOPLE": "3000",
        "LEADSTREAM_LOG_LEVEL": "WARNING",
    }
    async with (
        ServerProcess(tmp_path / "one", env) as one,
        ServerProcess(tmp_path / "two", env) as two,
    ):
        token = one.cli("token", "--org", "acme", "--user", "alice").stdout.strip()
        other_org = one.cli("token", "--org", "globex", "--user", "eve").stdout.strip()
        watcher, watcher_log = await client_of(two.url, token)
        outsider, outsider_log = await client_of(two.url, other_org)
        tab_one, _ = await client_of(one.url, token)
        try:
            for sio in (watcher, outsider):
                assert (await sio.call("leads:subscribe", {}, timeout=10))["ok"]
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
            ack = await tab_one.call("chat:send", {"text": "find 5 CTOs"}, timeout=10)
            done = await watcher_log.wait_for(
                "chat:done", lambda d: d["messageId"] == ack["messageId"]
            )
            assert done["stopped"] is False
            assert watcher_log.of("leads:batch")
            assert outsider_log.events == []
        finally:
            for sio in (watcher, outsider, tab_one):
                await sio.disconnect()
