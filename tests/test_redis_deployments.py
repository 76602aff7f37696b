"""The Redis deployments users run, for real: Sentinel (a primary, a replica
and three `redis-sentinel`s, failing over while changes flow) and a
3-primary Redis Cluster (the rate limiter's script, the job queue, the stop
relay, the page cache, readiness and the Socket.IO manager on it, and a node
restarted while changes flow), all through one `REDIS_URL`."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import pytest
import redis.asyncio as aioredis
from support import (
    FeedMirror,
    RedisSentinel,
    ServerProcess,
    bearer,
    connect_client,
    eventually,
    fresh_load,
    instances_env,
    settings_with,
)
from test_realtime import SlowDirectory
from test_redis_manager import ClusterView, room_channel

from leadstream.pacing import Backoff
from leadstream.realtime.remote_stop import RemoteStop
from leadstream.server.cli.chat_client import FeedWatcher
from leadstream.server.config import ConfigError
from leadstream.server.http.page_cache import RedisPageCache
from leadstream.server.http.readiness import Readiness
from leadstream.server.jobs.queue import JobFailed, RedisJobQueue
from leadstream.server.ratelimit import RateLimiter, RateLimitSettings
from leadstream.server.ratelimit.redis_backend import RedisRateLimitBackend
from leadstream.server.redis_connections import RATE_LIMITS, RedisConnections, RedisTarget


@pytest.fixture
def sentinel(tmp_path):
    deployment = RedisSentinel(tmp_path / "sentinel")
    deployment.start()
    yield deployment
    deployment.stop()


def app_env(tmp_path, redis_url: str, **extra: str) -> dict[str, str]:
    return instances_env(
        tmp_path / "shared", redis_url, LEADSTREAM_ORG_TIERS="acme=enterprise", **extra
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+sentinel://h1:26379,h2:26380/2/main", ("sentinel", "main", 2)),
        ("redis+sentinel://u:p%40ss@h1:26379/0/main", ("sentinel", "main", 0)),
        ("redis+cluster://h1:7000,h2:7001", ("cluster", None, 0)),
        ("rediss://h1:6380/1", ("server", None, 0)),
    ],
)
def test_redis_urls_are_parsed(url, expected):
    target = RedisTarget.parse(url)
    assert (target.kind, target.service, target.db) == expected
    if "u:p" in url:
        assert (target.username, target.password) == ("u", "p@ss")
    if target.kind != "server":
        assert target.nodes[0] == ("h1", 26379 if "sentinel" in url else 7000)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h1:26379", "/DB/SERVICE"),
        ("redis+sentinel://u:secret@h1:26379/main", "/DB/SERVICE"),
        ("redis+cluster://h1:7000/3", "only database 0"),
        ("redis+cluster://h1", "HOST:PORT"),
        ("memcached://h1:11211", "REDIS_URL must be"),
    ],
)
def test_bad_redis_urls_get_a_clear_error_without_the_password(url, says):
    with pytest.raises(ConfigError, match=says) as caught:
        RedisConnections(url)
    assert "secret" not in str(caught.value)


async def writes(http: aiohttp.ClientSession, urls: list[str], prefix: str, count: int) -> None:
    for n in range(count):
        url = urls[n % len(urls)]
        response = await http.post(url + "/api/leads", json={"name": f"{prefix} {n}"})
        assert response.status == 201, await response.text()


async def ready(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url + "/readyz") as response:
        return response.status == 200


async def test_sentinel_failover_while_changes_flow(tmp_path, sentinel):
    env = app_env(tmp_path, sentinel.url)
    async with ServerProcess(tmp_path / "a", env) as one, ServerProcess(tmp_path / "b", env) as two:
        token = one.token()
        async with aiohttp.ClientSession(headers=bearer(token)) as http:
            mirrors = [await FeedMirror.connect(http, s.url, token) for s in (one, two)]
            urls = [one.url, two.url]
            await writes(http, urls, "before", 10)
            old = sentinel.primary_port()
            assert old is not None
            flowing = asyncio.create_task(writes(http, urls, "during", 40))
            sentinel.kill_primary()
            new = await asyncio.to_thread(sentinel.wait_for_failover, old)
            await flowing
            assert new != old
            # Every Redis user follows the new primary: readiness, the page cache...
            for url in urls:
                await eventually(lambda url=url: ready(http, url), timeout=30, every=0.2)
            await writes(http, urls, "after", 10)
            pages = []
            for url in urls:
                async with http.get(url + "/api/leads?limit=5") as response:
                    pages.append(await response.json())
            assert pages[0] == pages[1]
            # ... and the Socket.IO manager, once its subscriber is back: a reply
            # on one instance reaches a tab on the other.
            tab = await connect_client(two.url, {"token": token}, ["chat:done"])
            async with asyncio.timeout(60):
                while True:
                    ack = await mirrors[0].sio.call(
                        "chat:send", {"text": "find 5 CTOs"}, timeout=20
                    )
                    assert ack["ok"], ack
                    try:
                        mine = lambda d, ack=ack: d["messageId"] == ack["messageId"]  # noqa: E731
                        await tab.log.wait_for("chat:done", mine, timeout=5)
                        break
                    except TimeoutError:
                        continue  # published while the subscriber was reconnecting
            await tab.sio.disconnect()

            await asyncio.sleep(1)
            expected, version = await fresh_load(http, one.url)
            assert len(expected) == 60
            for mirror in mirrors:
                if mirror.version < version:  # nothing new will arrive to reveal a gap
                    await mirror.resync()
                assert mirror.leads == expected and mirror.version == version
                await mirror.sio.disconnect()


async def test_rate_limits_on_a_cluster_count_user_org_and_ip_keys(redis_cluster):
    connections = RedisConnections(redis_cluster.url)
    # A generous wait (the app's is 0.25 s): the client learns the slot map on its
    # first call, and a slow, shared machine must not make this a fail-open test.
    backend = RedisRateLimitBackend(connections.client(RATE_LIMITS), timeout_s=5)
    limiter = RateLimiter(backend, RateLimitSettings())
    try:
        # The free tier: 20 per second per user; the user's and org's keys share
        # one hash slot, the IP's lies elsewhere, and both are counted.
        decisions = [await limiter.check(org="acme", user="u1", ip="10.0.0.1") for _ in range(25)]
        assert [d.allowed for d in decisions].count(True) == 20
        refused = [d for d in decisions if not d.allowed]
        assert {d.scope for d in refused} == {"user"} and not any(d.failed_open for d in refused)
        other = await limiter.check(org="acme", user="u2", ip="10.0.0.1")
        assert other.allowed and not other.failed_open
        assert limiter.backend_failures == 0
    finally:
        await connections.aclose()


async def test_job_queue_stop_relay_cache_and_readiness_on_a_cluster(redis_cluster, tmp_path):
    connections = RedisConnections(redis_cluster.url)
    client = connections.client()
    queue = RedisJobQueue(
        client, concurrency=2, retry=Backoff(attempts=2, base_delay_s=0.05), visibility_s=5
    )
    runs: list[str] = []
    dead: list[str] = []

    async def handler(job_id: str) -> None:
        runs.append(job_id)
        if job_id.startswith("broken"):
            raise RuntimeError("broken")

    async def on_dead(job_id: str, failure: JobFailed) -> None:
        dead.append(job_id)

    stops: list[str] = []

    async def on_stop(conversation_id: str) -> bool:
        stops.append(conversation_id)
        return True

    relay = RemoteStop(client, on_stop)
    queue.register("kind", handler, on_dead)
    await queue.start()
    relay.start()
    try:
        for job in ("a", "b", "broken"):
            await queue.submit("kind", job)
        async with asyncio.timeout(20):
            while dead != ["broken"] or len(runs) < 4:
                await asyncio.sleep(0.05)
        assert sorted(runs) == ["a", "b", "broken", "broken"]
        assert await queue.stats() == {"queued": 0, "running": 0, "delayed": 0, "dead": 1}

        await relay.claim("conv-1")
        async with asyncio.timeout(10):
            while not stops:
                assert await relay.request_stop("conv-1")
                await asyncio.sleep(0.2)  # the listener may still be subscribing
        assert stops[0] == "conv-1"

        cache = RedisPageCache(client, ttl_s=30)
        await cache.set("leadstream:leads:acme:v1:x", b"page")
        assert await cache.get("leadstream:leads:acme:v1:x") == b"page"

        class NoStore:
            async def ping(self) -> None:
                return None

        readiness = Readiness(NoStore(), redis=client)  # type: ignore[arg-type]
        assert await readiness.report() == (True, {"store": "ok", "redis": "ok"})
    finally:
        await relay.close()
        await queue.close()
        await connections.aclose()


async def test_two_instances_and_a_worker_on_a_cluster(tmp_path, redis_cluster):
    env = app_env(
        tmp_path, redis_cluster.url, LEADSTREAM_SERVE_WORKERS="0"
    )  # the worker takes jobs
    async with ServerProcess(tmp_path / "a", env) as one, ServerProcess(tmp_path / "b", env) as two:
        token = one.token()
        worker = one.worker()
        try:
            async with aiohttp.ClientSession(headers=bearer(token)) as http:
                tab = await connect_client(two.url, {"token": token}, ("chat:done", "export:ready"))
                sio, tab_log = tab.sio, tab.log
                mirror = FeedMirror(sio, http, two.url)
                await mirror.start()
                # Changes written on one reach a subscriber on two.
                await writes(http, [one.url], "cross", 10)
                expected, version = await fresh_load(http, two.url)
                async with asyncio.timeout(20):
                    while mirror.version < version:
                        await asyncio.sleep(0.05)
                assert mirror.leads == expected and mirror.resyncs == 1

                # A reply running on one reaches the user's tab on two.
                tab_one = (await connect_client(one.url, {"token": token}, ())).sio
                ack = await tab_one.call("chat:send", {"text": "find 5 CTOs"}, timeout=20)
                assert ack["ok"], ack
                done = await tab_log.wait_for(
                    "chat:done", lambda d: d["messageId"] == ack["messageId"], timeout=30
                )
                assert done["stopped"] is False
                await tab_one.disconnect()

                # An export run by `leadstream worker` (a write-only manager) tells the tab.
                created = await http.post(two.url + "/api/exports", json={"filter": {}})
                assert created.status == 202, await created.text()
                job_id = (await created.json())["jobId"]
                ready_event = await tab_log.wait_for(
                    "export:ready", lambda d: d["jobId"] == job_id, timeout=60
                )
                assert ready_event["rows"] == len(expected)
                await sio.disconnect()
        finally:
            worker.terminate()
            worker.wait(timeout=10)


async def test_stop_a_reply_running_on_another_instance_on_a_cluster(
    settings, redis_cluster, start_server, connect, token
):
    shared = settings_with(settings, redis_url=redis_cluster.url)
    slow = lambda store: SlowDirectory(store, chunk_size=5)  # noqa: E731
    one = await start_server(shared, provider=slow)
    two = await start_server(shared, provider=slow)
    tab_one = await connect(one, token())
    tab_two = await connect(two, token())
    ack = await tab_one.call("chat:send", {"text": "find 500 CTOs"})
    await tab_two.log.wait_for("leads:batch")  # the reply runs on instance one
    busy = await tab_two.call(
        "chat:send", {"text": "find 5 CTOs", "conversationId": ack["conversationId"]}
    )
    assert busy["ok"] is False and busy["error"]["code"] == "conversation_busy"
    stopped = await tab_two.call("chat:stop", {"conversationId": ack["conversationId"]})
    assert stopped == {"ok": True, "stopped": True}
    done = await tab_two.log.wait_for("chat:done", lambda d: d["messageId"] == ack["messageId"])
    assert done["stopped"] is True
    await tab_one.log.wait_for("chat:done", lambda d: d["messageId"] == ack["messageId"])


async def test_a_cluster_node_restarted_while_changes_flow(tmp_path, redis_cluster):
    """The primary holding the org's room channel goes away and comes back:
    both instances subscribe there again, and every subscriber ends equal to
    a fresh load."""
    env = app_env(tmp_path, redis_cluster.url)
    view = ClusterView(redis_cluster)
    room = room_channel("org:acme")
    port = await view.owner(room)
    await view.aclose()
    (node,) = [server for server in redis_cluster.servers if server.port == port]
    async with ServerProcess(tmp_path / "a", env) as one, ServerProcess(tmp_path / "b", env) as two:
        token = one.token()
        async with aiohttp.ClientSession(headers=bearer(token)) as http:
            mirrors = [await FeedMirror.connect(http, s.url, token) for s in (one, two)]
            urls = [one.url, two.url]
            await writes(http, urls, "before", 10)
            node.stop()
            await writes(http, urls, "during", 10)
            node.start()
            # Each change is published once: write on one instance until a
            # change published after the other's subscriber is back reaches
            # it (and reveals what it missed), then the other way round.
            rounds = 0
            for writer, reader in ((one, mirrors[1]), (two, mirrors[0])):
                async with asyncio.timeout(60):
                    while True:
                        rounds += 1
                        await writes(http, [writer.url], f"after {rounds}", 2)
                        expected, version = await fresh_load(http, one.url)
                        if reader.version >= version:
                            break
                        await asyncio.sleep(0.2)
            async with asyncio.timeout(20):  # the writer's own tab, served locally
                while any(mirror.version < version for mirror in mirrors):
                    await asyncio.sleep(0.05)
            restarted = aioredis.Redis(port=port)
            try:  # both instances subscribed on the restarted node again
                assert await restarted.pubsub_shardnumsub(room) == [(room.encode(), 2)]
            finally:
                await restarted.aclose()
            for mirror in mirrors:
                assert mirror.leads == expected and mirror.version == version
                assert mirror.resyncs >= 2  # the gap was found and filled
                await mirror.sio.disconnect()


async def test_changes_of_one_org_written_on_two_instances_apply_in_order(tmp_path, redis_server):
    """Two instances writing one org publish independently, so a version can
    overtake the one before it; the clients' reorder buffer (`VersionOrder`,
    as in the widget) waits for it instead of resyncing."""
    env = app_env(tmp_path, redis_server.url, LEADSTREAM_RATE_LIMITS="off")
    async with ServerProcess(tmp_path / "a", env) as one, ServerProcess(tmp_path / "b", env) as two:
        token = one.token()
        async with aiohttp.ClientSession(headers=bearer(token)) as http:
            mirrors = [
                await FeedMirror.connect(http, s.url, token, reorder_s=5.0) for s in (one, two)
            ]
            out = io.StringIO()
            watcher = FeedWatcher(two.url, token, out=out, reorder_s=5.0)
            stop = asyncio.Event()
            watching = asyncio.create_task(watcher.run(stop))
            async with asyncio.timeout(20):
                while "watching the lead feed" not in out.getvalue():
                    await asyncio.sleep(0.05)
            # Eight writers, each alternating instances: versions interleave.
            urls = [one.url, two.url]
            await asyncio.gather(
                *(writes(http, urls[w % 2 :] + urls[: w % 2], f"w{w}", 25) for w in range(8))
            )
            expected, version = await fresh_load(http, one.url)
            assert len(expected) == 200
            async with asyncio.timeout(20):
                while any(m.version < version for m in mirrors) or watcher.version < version:
                    await asyncio.sleep(0.05)
            stop.set()
            assert await watching == 0
            for mirror in mirrors:
                assert mirror.leads == expected
                assert mirror.resyncs == 1, "only the first subscribe: no gap was real"
                await mirror.sio.disconnect()
            lines = out.getvalue().splitlines()
            printed = [int(line.split()[0][1:]) for line in lines if line.startswith("v")]
            assert printed == list(range(1, version + 1))
            assert "caught up" not in out.getvalue()
            reordered = sum(m.order.reordered for m in mirrors) + watcher.order.reordered
            print(f"changes that overtook an earlier version: {reordered}")
