"""Several real server processes behind a real redis-server: tenants never see
each other's events, a reconnecting client gets exactly what it missed, and
killing Redis while changes flow loses nothing."""

from __future__ import annotations

import asyncio
import random

import aiohttp
from support import FeedMirror, ServerProcess, bearer, connect_client, fresh_load, instances_env

ORG_EVENTS = ("leads:changes",)
USER_EVENTS = ("chat:delta", "chat:tool", "chat:done", "leads:batch", "export:ready")


async def test_randomized_tenant_isolation(tmp_path, redis_server):
    rng = random.Random(7)
    env = instances_env(tmp_path / "shared", redis_server.url)
    async with ServerProcess(tmp_path / "a", env) as one, ServerProcess(tmp_path / "b", env) as two:
        people = [(org, user) for org in ("acme", "globex", "initech") for user in ("u1", "u2")]
        tokens = {(org, user): one.token(org, user) for org, user in people}
        clients = []  # (org, user, client)
        for org, user in people:
            for server in (one, two):
                auth = {"token": tokens[(org, user)]}
                client = await connect_client(server.url, auth, ORG_EVENTS + USER_EVENTS)
                assert (await client.sio.call("leads:subscribe", {}, timeout=10))["ok"]
                clients.append((org, user, client))
        conversations: dict[tuple[str, str], set[str]] = {p: set() for p in people}
        leads_of: dict[str, set[str]] = {org: set() for org in ("acme", "globex", "initech")}
        try:
            async with aiohttp.ClientSession() as http:
                for step in range(24):
                    org, user = rng.choice(people)
                    server = rng.choice((one, two))
                    if rng.random() < 0.6:
                        response = await http.post(
                            server.url + "/api/leads",
                            json={"name": f"{org} lead {step}"},
                            headers=bearer(tokens[(org, user)]),
                        )
                        leads_of[org].add((await response.json())["id"])
                    else:
                        sio = next(c.sio for o, u, c in clients if (o, u) == (org, user))
                        ack = await sio.call("chat:send", {"text": "find 3 CTOs"}, timeout=10)
                        conversations[(org, user)].add(ack["conversationId"])
                await asyncio.sleep(1.5)  # let every event arrive
            for org, user, client in clients:
                for event, data in client.log.events:
                    if event == "leads:changes":
                        assert {c["id"] for c in data["changes"]} <= leads_of[org], (org, event)
                    else:
                        assert data["conversationId"] in conversations[(org, user)], (
                            org,
                            user,
                            event,
                        )
            # Everyone got their own: both tabs of each org saw all its changes.
            for org, _, client in clients:
                seen = {c["id"] for e in client.log.of("leads:changes") for c in e["changes"]}
                assert seen == leads_of[org]
        finally:
            for *_, client in clients:
                await client.sio.disconnect()


async def test_reconnect_with_since_gets_exactly_the_missed_changes(tmp_path, redis_server):
    env = instances_env(tmp_path / "shared", redis_server.url)
    async with ServerProcess(tmp_path / "a", env) as one, ServerProcess(tmp_path / "b", env) as two:
        token = one.token()
        async with aiohttp.ClientSession(headers=bearer(token)) as http:
            for n in range(3):
                await http.post(one.url + "/api/leads", json={"name": f"before {n}"})
            sio = (await connect_client(two.url, {"token": token}, ORG_EVENTS)).sio
            seen = (await sio.call("leads:subscribe", {}, timeout=10))["version"]
            await sio.disconnect()
            missed = []
            for n in range(5):
                created = await (
                    await http.post(one.url + "/api/leads", json={"name": f"missed {n}"})
                ).json()
                missed.append(created["id"])
            deleted = missed.pop(0)
            await http.delete(f"{one.url}/api/leads/{deleted}")
            sio = (await connect_client(two.url, {"token": token}, ORG_EVENTS)).sio
            ack = await sio.call("leads:subscribe", {"since": seen}, timeout=10)
            await sio.disconnect()
        assert [c["version"] for c in ack["changes"]] == list(range(seen + 1, seen + 7))
        assert [c["op"] for c in ack["changes"]] == ["insert"] * 5 + ["delete"]
        assert ack["changes"][-1]["id"] == deleted and not ack["reset"]


async def test_redis_killed_and_restarted_while_changes_flow(tmp_path, redis_server):
    # The enterprise tier lets this one user write as fast as the test does;
    # with Redis away the limiter fails open.
    env = instances_env(
        tmp_path / "shared", redis_server.url, LEADSTREAM_ORG_TIERS="acme=enterprise"
    )
    async with ServerProcess(tmp_path / "a", env) as one, ServerProcess(tmp_path / "b", env) as two:
        token = one.token()
        async with aiohttp.ClientSession(headers=bearer(token)) as http:
            mirrors = [await FeedMirror.connect(http, s.url, token) for s in (one, two, two)]

            async def writes(prefix: str, count: int) -> None:
                for n in range(count):
                    server = (one, two)[n % 2]
                    response = await http.post(
                        server.url + "/api/leads", json={"name": f"{prefix} {n}"}
                    )
                    assert response.status == 201
                    if n % 3 == 2:
                        lead = (await response.json())["id"]
                        assert (
                            await http.patch(
                                f"{server.url}/api/leads/{lead}", json={"title": "CTO"}
                            )
                        ).status == 200

            await writes("before", 10)
            redis_server.stop()
            await writes("during", 10)  # each instance keeps serving; Redis is away
            async with http.get(one.url + "/readyz") as response:
                assert response.status == 503
                assert (await response.json())["checks"] == {"store": "ok", "redis": "failed"}
            redis_server.start()
            await asyncio.sleep(4)  # python-socketio's listener reconnects with backoff
            await writes("after", 6)
            await asyncio.sleep(1.5)
            expected, version = await fresh_load(http, one.url)
            assert len(expected) == 26
            for mirror in mirrors:
                if mirror.version < version:  # nothing new will arrive to reveal the gap
                    await mirror.resync()
                assert mirror.leads == expected and mirror.version == version
            assert any(m.resyncs > 1 for m in mirrors), (
                "the missed cross-instance events forced a resync"
            )
            for mirror in mirrors:
                await mirror.sio.disconnect()
