"""Redis Sentinel failover while changes flow: what users notice.

Two `leadstream serve` processes share one SQLite file and a Sentinel-managed
Redis (a primary, one replica, three sentinels on loopback ports, failing
over after 1 s without an answer: `down-after-milliseconds 1000`), with
`REDIS_URL=redis+sentinel://...`. Writers post leads through both instances
the whole time; a subscriber on each instance keeps a mirror of the list (as
the widget does). The primary is killed (SIGTERM) mid-run.

Printed:
- writes per second before the failover and during it (from the kill until
  every instance answers `/readyz` 200 again), and writes that failed;
- seconds from the kill until the sentinels name a new primary, until every
  instance is ready again (`/readyz` 200: store and Redis), and until live
  changes cross instances again (a change written on one instance reaches a
  subscriber on the other by Socket.IO, not by a resync);
- whether every subscriber ends equal to a fresh load (and how many resyncs
  that took).

    flock /tmp/leadstream-bench.lock .venv/bin/python bench/sentinel_failover.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # process helpers
from support import FeedMirror, RedisSentinel, ServerProcess, bearer, fresh_load, instances_env


async def main(writers: int, before_s: float, after_s: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        sentinel = RedisSentinel(tmp / "sentinel")
        sentinel.start()
        env = instances_env(
            tmp / "shared", sentinel.url, LEADSTREAM_PEOPLE="1000", LEADSTREAM_RATE_LIMITS="off"
        )
        try:
            async with ServerProcess(tmp / "a", env) as one, ServerProcess(tmp / "b", env) as two:
                token = one.token()
                async with aiohttp.ClientSession(headers=bearer(token)) as http:
                    await run(http, sentinel, [one, two], token, writers, before_s, after_s)
        finally:
            sentinel.stop()


async def run(
    http: aiohttp.ClientSession,
    sentinel: RedisSentinel,
    servers: list[ServerProcess],
    token: str,
    writers: int,
    before_s: float,
    after_s: float,
) -> None:
    """Write, kill the primary, time the recovery, check the subscribers."""
    mirrors = [await FeedMirror.connect(http, server.url, token) for server in servers]
    done: list[float] = []  # times of successful writes
    failed: list[float] = []
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        n = 0
        while not stop.is_set():
            url = servers[(w + n) % len(servers)].url
            n += 1
            try:
                async with http.post(url + "/api/leads", json={"name": f"w{w} {n}"}) as response:
                    (done if response.status == 201 else failed).append(time.monotonic())
            except aiohttp.ClientError:
                failed.append(time.monotonic())

    tasks = [asyncio.create_task(writer(w)) for w in range(writers)]
    started = time.monotonic()
    await asyncio.sleep(before_s)
    old = sentinel.primary_port()
    killed = time.monotonic()
    sentinel.kill_primary()
    promoted = ready = crossed = None
    while ready is None or promoted is None:
        now = time.monotonic()
        if promoted is None and sentinel.primary_port() not in (None, old):
            promoted = now
        if ready is None and all([await is_ready(http, s.url) for s in servers]):
            ready = now
        await asyncio.sleep(0.05)
    # Live changes cross instances again: a probe written on the first instance
    # reaches the second instance's subscriber within a second, with no resync.
    probe = mirrors[1]
    while crossed is None:
        resyncs = probe.resyncs
        async with http.post(servers[0].url + "/api/leads", json={"name": "probe"}) as response:
            lead = (await response.json())["id"]
        sent = time.monotonic()
        for _ in range(100):  # up to a second
            if lead in probe.leads:
                break
            await asyncio.sleep(0.01)
        if lead in probe.leads and probe.resyncs == resyncs:
            crossed = sent
        else:
            await asyncio.sleep(0.2)
    await asyncio.sleep(after_s)
    stop.set()
    await asyncio.gather(*tasks)
    await asyncio.sleep(1.5)  # the reorder buffer's wait, and the last emits
    expected, version = await fresh_load(http, servers[0].url)
    for mirror in mirrors:
        if mirror.version < version:
            await mirror.resync()
    equal = all(m.leads == expected and m.version == version for m in mirrors)

    def rate(first: float, last: float) -> float:
        return sum(1 for t in done if first <= t < last) / (last - first)

    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"writers: {writers}, two instances, REDIS_URL=redis+sentinel:// (3 sentinels)")
    print(f"writes/s before the failover: {rate(started, killed):8.1f}")
    during = rate(killed, ready)
    print(
        f"writes/s during it:           {during:8.1f}  "
        f"({sum(1 for t in done if killed <= t < ready)} writes; "
        f"ratio to before {during / rate(started, killed):.2f})"
    )
    print(f"writes that failed:           {len(failed):8d}")
    print(f"new primary named after:      {promoted - killed:8.2f} s")
    print(f"every instance ready after:   {ready - killed:8.2f} s")
    print(f"live changes cross after:     {crossed - killed:8.2f} s")
    print(
        f"subscribers equal to a fresh load: {equal} "
        f"({len(expected)} leads, resyncs {[m.resyncs for m in mirrors]})"
    )
    for mirror in mirrors:
        mirror.order.close()
        await mirror.sio.disconnect()


async def is_ready(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url + "/readyz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=4, help="concurrent writers")
    parser.add_argument("--before", type=float, default=5.0, help="seconds before the kill")
    parser.add_argument("--after", type=float, default=3.0, help="seconds after recovery")
    args = parser.parse_args()
    asyncio.run(main(args.writers, args.before, args.after))
