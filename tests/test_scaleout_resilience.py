"""Several real server processes behind a real redis-server: tenants never see
each other's events, a reconnecting client gets exactly what it missed, and
killing Redis while changes flow loses nothing."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import socketio
from support import EventLog, FeedMirror, ServerProcess, bearer, fresh_load, recorder

ORG_EVENTS = ("leads:changes",)
USER_EVENTS = ("chat:delta", "chat:tool", "chat:done", "leads:batch", "export:ready")


def cluster_env(tmp_path, redis_server, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_server.url,
        "LEADSTREAM_STORE": f"sqlite:///{tmp_path / 'shared' / 'leadstream.db'}",
        "LEADSTREAM_DATA_DIR": str(tmp_path / "shared"),
        "LEADSTREAM_SECRET": "cluster-secret-" + "c" * 32,
        "LEADSTREAM_PEOPLE": "3000",
        "LEADSTREAM_LOG_LEVEL": "ERROR",
        **extra,
    }


async def connected(
    url: str, token: str, events: tuple[str, ...]
) -> tuple[socketio.AsyncClient, EventLog]:
    sio = socketio.AsyncClient(reconnection=False)
    log = EventLog()
    for event in events:
        sio.on(event, recorder(log, event))
    await sio.connect(url, auth={"token": token}, transports=["websocket"])
    return sio, log


async def test_randomized_tenant_isolation(tmp_path, redis_server):
    rng = random.Random(7)
    env = cluster_env(tmp_path, redis_server)
    async with ServerProcess(tmp_path / "a", env) as one, ServerProcess(tmp_path / "b", env) as two:
        people = [(org, user) for org in ("acme", "globex", "initech") for user in ("u1", "u2")]
        tokens = {p: one.cli("token", "--org", p[0], "--user", p[1]).stdout.strip() for p in people}
        clients = []  # (org, user, sio, log)
        for org, user in people:
            for server in (one, two):
                sio, log = await connected(
                    server.url, tokens[(org, user)], ORG_EVENTS + USER_EVENTS
                )
                assert (await sio.call("leads:subscribe", {}, timeout=10))["ok"]
                clients.append((org, user, sio, log))
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
                        _, sio, _ = next(
                            (c[1], c[2], c[3]) for c in clients if c[:2] == (org, user)
                        )
                        ack = await sio.call("chat:send", {"text": "find 3 CTOs"}, timeout=10)
                        conversations[(org, user)].add(ack["conversationId"])
                await asyncio.sleep(1.5)  # let every event arrive
            for org, user, _, log in clients:
                for event, data in log.events:
                    if event == "leads:changes":
                        assert {c["id"] for c in data["changes"]} <= leads_of[org], (org, event)
                    else:
                        assert data["conversationId"] in conversations[(org, user)], (
                            org,
                            user,
                            event,
                        )
            # Everyone got their own: both tabs of each org saw all its changes.
            for org, _, _, log in clients:
                seen = {c["id"] for e in log.of("leads:changes") for c in e["changes"]}
                assert seen == leads_of[org]
        finally:
            for *_, sio, _ in clients:
                await sio.disconnect()


async def test_reconnect_with_since_gets_exactly_the_missed_changes(tmp_path, redis_server):
    env = cluster_env(tmp_path, redis_server)
    async with ServerProcess(tmp_path / "a", env) as one, ServerProcess(tmp_path / "b", env) as two:
        token = one.cli("token", "--org", "acme", "--user", "alice").stdout.strip()
        async with aiohttp.ClientSession(headers=bearer(token)) as http:
            for n in range(3):
                await http.post(one.url + "/api/leads", json={"name": f"before {n}"})
            sio, _ = await connected(two.url, token, ORG_EVENTS)
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
            sio, _ = await connected(two.url, token, ORG_EVENTS)
            ack = await sio.call("leads:subscribe", {"since": seen}, timeout=10)
            await sio.disconnect()
        assert [c["version"] for c in ack["changes"]] == list(range(seen + 1, seen + 7))
        assert [c["op"] for c in ack["changes"]] == ["insert"] * 5 + ["delete"]
        assert ack["changes"][-1]["id"] == deleted and not ack["reset"]


async def test_redis_killed_and_restarted_while_changes_flow(tmp_path, redis_server):
    # The enterprise tier lets this one user write as fast as the test does;
    # with Redis away the limiter fails open.
    env = cluster_env(tmp_path, redis_server, LEADSTREAM_ORG_TIERS="acme=enterprise")
    async with ServerProcess(tmp_path / "a", env) as one, ServerProcess(tmp_path / "b", env) as two:
        token = one.cli("token", "--org", "acme", "--user", "alice").stdout.strip()
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
