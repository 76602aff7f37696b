"""The Socket.IO transport under attack: binary attachments, handshake floods,
transports that never connect or retry refused connects, and sockets that
outlive their token (issue 10, items 6, 7 and 10)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import socketio
from hostile_support import Target
from support import EngineSocket

MB = 1024 * 1024


async def _other_org_works(target: Target) -> None:
    """A client of another org connects and is answered."""
    sio = socketio.AsyncClient(reconnection=False)
    token = target.token("bystander", "bob")
    await sio.connect(target.url, auth={"token": token}, transports=["websocket"])
    try:
        ack = await sio.call("leads:subscribe", {}, timeout=10)
        assert ack["ok"], ack
    finally:
        await sio.disconnect()


async def test_binary_attachments_close_the_connection(target: Target) -> None:
    """`451-[...placeholder...]` then 1 MB frames used to cost +550 MB; now the
    header closes the connection and memory stays flat."""
    async with aiohttp.ClientSession() as http:
        lead = await target.store_victim_lead(http)
        before = target.rss()
        async with target.probe() as probe:
            for _ in range(3):
                raw = await EngineSocket.open(http, target.url)
                assert (await raw.connect(target.token("attacker"))).startswith("40{")
                sent = await raw.send_binary_attack(frames=200, size=999_000)
                async with asyncio.timeout(10):
                    await raw.wait_closed()
                assert sent < 200, "the server kept reading 200 MB of attachments"
            await _other_org_works(target)
            await asyncio.sleep(0.3)  # the probe keeps asking while the server cleans up
        probe.assert_healthy()
        growth = target.rss() - before
        assert growth < 20 * MB, f"memory grew by {growth / 1e6:.0f} MB (bound 20 MB)"
        await target.assert_still_there(http, lead)


async def test_websocket_handshake_burst_is_refused_with_429(target: Target) -> None:
    """300 websocket handshakes at once from one address: all but the per-second
    allowance (30) get `429`; a real client connects again after Retry-After."""
    async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as attacker:
        lead = await target.store_victim_lead(http)
        before = target.rss()
        retry_after: list[int] = []

        async def handshake() -> int:
            try:
                raw = await EngineSocket.open(attacker, target.url)
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.headers is not None
                retry_after.append(int(exc.headers["Retry-After"]))
                return exc.status
            await raw.ws.close()
            return 101

        async with target.probe() as probe:
            statuses: list[int] = []
            for _ in range(6):  # 50 at a time: one client, as fast as it goes
                statuses += await asyncio.gather(*(handshake() for _ in range(50)))
        probe.assert_healthy()
        refused, accepted = statuses.count(429), statuses.count(101)
        assert refused + accepted == 300, sorted(set(statuses))
        assert refused >= 200, f"only {refused} of 300 handshakes were refused"
        growth = target.rss() - before
        assert growth < 20 * MB, f"memory grew by {growth / 1e6:.0f} MB (bound 20 MB)"
        await asyncio.sleep(max(retry_after))
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(target.url, auth={"token": target.token()}, transports=["websocket"])
        assert (await sio.call("leads:subscribe", {}, timeout=10))["ok"]
        await sio.disconnect()
        await target.assert_still_there(http, lead)


async def test_polling_handshake_flood_is_bounded(start_target) -> None:
    """3,000 polling handshakes from one address: at most the allowance opens a
    transport, the rest get `429`, and the transports opened but never
    connected are closed after the connect timeout."""
    target = await start_target(LEADSTREAM_CONNECT_TIMEOUT="1")
    url = target.url + "/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as attacker:
        lead = await target.store_victim_lead(http)
        before = target.rss()
        opened: list[str] = []

        async def handshake() -> int:
            async with attacker.get(url) as response:
                body = await response.text()
                if response.status == 200:
                    opened.append(json.loads(body[1:])["sid"])  # `0{"sid": ...}`
                else:
                    assert json.loads(body)["error"]["code"] == "rate_limited"
                return response.status

        async with target.probe() as probe:
            statuses: list[int] = []
            for _ in range(120):  # 25 at a time: one client, as fast as it goes
                statuses += await asyncio.gather(*(handshake() for _ in range(25)))
        probe.assert_healthy()
        assert statuses.count(200) + statuses.count(429) == 3000
        assert statuses.count(200) <= 300 and statuses.count(429) >= 2700, statuses.count(200)
        growth = target.rss() - before
        assert growth < 20 * MB, f"memory grew by {growth / 1e6:.0f} MB (bound 20 MB)"
        await asyncio.sleep(2)  # past the 1 s connect timeout
        async with attacker.get(f"{url}&sid={opened[0]}") as response:
            assert response.status == 400  # that transport was closed
        await _other_org_works(target)
        await target.assert_still_there(http, lead)


async def test_refused_and_idle_transports_are_closed(start_target) -> None:
    """A bad token may not be retried forever on one transport: the server closes
    it right after CONNECT_ERROR; a transport that never connects is closed
    after the connect timeout (1 s here)."""
    target = await start_target(LEADSTREAM_CONNECT_TIMEOUT="1")
    async with aiohttp.ClientSession() as http:
        lead = await target.store_victim_lead(http)
        before = target.rss()
        async with target.probe() as probe:
            refused = await EngineSocket.open(http, target.url)
            answer = await refused.connect("forged-token")
            assert answer.startswith("44")
            assert json.loads(answer[2:])["data"]["code"] == "unauthorized"
            for _ in range(20):  # retries on the same transport go unanswered
                await refused.ws.send_str("40" + json.dumps({"token": "forged-token"}))
            async with asyncio.timeout(5):  # engine.io alone would wait 45 s
                await refused.wait_closed()
            idle = [await EngineSocket.open(http, target.url) for _ in range(10)]
            async with asyncio.timeout(5):
                for raw in idle:
                    await raw.wait_closed()
            await _other_org_works(target)
        probe.assert_healthy()
        growth = target.rss() - before
        assert growth < 20 * MB, f"memory grew by {growth / 1e6:.0f} MB (bound 20 MB)"
        await target.assert_still_there(http, lead)


async def test_socket_does_not_outlive_its_token(target: Target) -> None:
    """A 2-second token: an event after expiry acks `unauthorized` and the socket
    is disconnected; an idle subscribed socket is disconnected too and stops
    receiving the org's changes."""
    async with aiohttp.ClientSession() as http:
        lead = await target.store_victim_lead(http)
        before = target.rss()
        async with target.probe() as probe:
            busy = socketio.AsyncClient(reconnection=False)
            idle = socketio.AsyncClient(reconnection=False)
            expires = time.time() + 2
            for sio, user in ((busy, "alice"), (idle, "bob")):
                token = target.token("victim", user, ttl=2)
                await sio.connect(target.url, auth={"token": token}, transports=["websocket"])
                assert (await sio.call("leads:subscribe", {}, timeout=10))["ok"]
            changes: list = []
            idle.on("leads:changes", changes.append)
            gone = {"busy": asyncio.Event(), "idle": asyncio.Event()}
            busy.on("disconnect", lambda *_: gone["busy"].set())
            idle.on("disconnect", lambda *_: gone["idle"].set())
            await asyncio.sleep(expires - time.time() + 0.2)
            ack = await busy.call("leads:subscribe", {}, timeout=10)
            assert ack["ok"] is False and ack["error"]["code"] == "unauthorized"
            async with asyncio.timeout(10):
                await gone["busy"].wait()
                await gone["idle"].wait()
            async with http.post(
                target.url + "/api/leads", json={"name": "Later"}, headers=target.headers()
            ) as response:
                assert response.status == 201
            await asyncio.sleep(0.3)
            assert changes == []
            await _other_org_works(target)
        probe.assert_healthy()
        growth = target.rss() - before
        assert growth < 20 * MB, f"memory grew by {growth / 1e6:.0f} MB (bound 20 MB)"
        await target.assert_still_there(http, lead)
