"""Rate limits: the sliding-window counter in process and on a real redis-server,
tiers, burst then sustained rates, the aiohttp middleware on a real port, per-IP
limits for unauthenticated traffic, events, and failing open with Redis stopped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from support import RedisServer

from leadstream.server.auth import AuthError, TokenSigner
from leadstream.server.config import ConfigError, Settings
from leadstream.server.ratelimit import (
    InProcessRateLimitBackend,
    Limit,
    RateLimitBackend,
    RateLimiter,
    RateLimitSettings,
    Tier,
)
from leadstream.server.ratelimit.middleware import forwarded_client_ip, rate_limit_middleware
from leadstream.server.ratelimit.redis_backend import RedisRateLimitBackend

SECRET = "ratelimit-test-secret-" + "x" * 32
FREE = Tier(
    "free",
    user=(Limit(5, 1), Limit(20, 10)),  # bursts of 5, 2/s sustained
    org=(Limit(8, 1), Limit(40, 10)),
    ip=(Limit(100, 1),),
)
PRO = Tier("pro", user=(Limit(10, 1), Limit(60, 10)), org=(Limit(30, 1),), ip=(Limit(100, 1),))
SETTINGS = RateLimitSettings(
    tiers={"free": FREE, "pro": PRO}, anonymous_ip=(Limit(3, 1),), backend_retry_s=0.2
)
TIERS_OF_ORGS = {"acme": "free", "bigco": "pro"}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def redis_client(url: str) -> Redis:
    # No retries and short timeouts: a rate-limit call must never hold a request long.
    return Redis.from_url(
        url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


@pytest.fixture(params=["in-process", "redis"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[RateLimitBackend]:
    if request.param == "in-process":
        yield InProcessRateLimitBackend()
        return
    server: RedisServer = request.getfixturevalue("shared_redis_server")
    client = redis_client(server.url)
    await client.flushdb()
    # A generous wait: these tests are about counting; a slow, shared machine must not
    # turn them into fail-open tests (test_fail_open_when_redis_is_stopped is that one).
    yield RedisRateLimitBackend(client, timeout_s=5)
    await client.aclose()


def principal_of(signer: TokenSigner) -> Callable[[web.Request], tuple[str, str] | None]:
    """The wiring server/http/app.py uses: a valid bearer token names (org, user), else None."""

    def of(request: web.Request) -> tuple[str, str] | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            principal = signer.verify(token.strip())
        except AuthError:
            return None
        return principal.org, principal.user

    return of


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET, default_ttl_s=3600)


@pytest.fixture
def serve(
    signer: TokenSigner, serve_app: Callable[[web.Application], Awaitable[TestServer]]
) -> Callable[..., Awaitable[TestServer]]:
    """A small app with the rate-limit middleware, on a real port."""

    async def things(request: web.Request) -> web.Response:
        return web.json_response({"things": []})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def start(limiter: RateLimiter, **options: object) -> TestServer:
        middleware = rate_limit_middleware(limiter, principal_of=principal_of(signer), **options)
        app = web.Application(middlewares=[middleware])
        app.router.add_get("/api/things", things)
        app.router.add_get("/api/info", things)
        app.router.add_get("/healthz", healthz)
        return await serve_app(app)

    return start


def bearer(signer: TokenSigner, org: str, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.issue(org, user).token}"}


async def statuses(
    http: aiohttp.ClientSession, url: str, count: int, headers: dict[str, str] | None = None
) -> list[int]:
    codes = []
    for _ in range(count):
        async with http.get(url, headers=headers) as response:
            codes.append(response.status)
    return codes


# The sliding-window counter, on a clock the test moves


async def test_burst_then_sustained_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(InProcessRateLimitBackend(clock=clock), SETTINGS, clock=clock)

    async def allowed(user: str) -> bool:
        return (await limiter.check(org="acme", user=user, ip="10.0.0.1")).allowed

    # A burst: the burst window admits 5 at once, no more.
    burst = [await allowed("alice") for _ in range(10)]
    assert burst == [True] * 5 + [False] * 5

    # A client asking 4/s for a minute gets the sustained 2/s (20 per 10 s), and
    # never more than the burst limit within one second.
    clock.advance(30)
    times = []
    for _ in range(240):
        if await allowed("bob"):
            times.append(clock.now)
        clock.advance(0.25)
    assert 110 <= len(times) <= 130, len(times)
    assert max(sum(1 for t in times if s <= t < s + 1) for s in times) <= 5

    # A client under the sustained rate is never refused.
    clock.advance(30)
    answers = []
    for _ in range(90):
        answers.append(await allowed("carol"))
        clock.advance(1 / 1.5)
    assert all(answers)


async def test_retry_after_says_when_the_request_fits() -> None:
    clock = FakeClock()
    limiter = RateLimiter(InProcessRateLimitBackend(clock=clock), SETTINGS, clock=clock)
    for _ in range(3):
        # Refused at various points of the burst window (the retry time lies in
        # this window or in the next one): one step before it still refused, at it allowed.
        while (decision := await limiter.check(org="acme", user="alice")).allowed:
            clock.advance(0.05)
        assert decision.scope == "user" and decision.limit == 5 and decision.remaining == 0
        assert 0 < decision.retry_after_s <= 2
        clock.advance(decision.retry_after_s - 0.01)
        assert not (await limiter.check(org="acme", user="alice")).allowed
        clock.advance(0.01 + 1e-6)
        assert (await limiter.check(org="acme", user="alice")).allowed
        clock.advance(0.37)


async def test_idle_counters_are_swept() -> None:
    clock = FakeClock()
    backend = InProcessRateLimitBackend(clock=clock, sweep_every_s=1)
    limiter = RateLimiter(backend, SETTINGS, clock=clock)
    for user in ("alice", "bob", "carol"):
        await limiter.check(org="acme", user=user, ip="10.0.0.1")
    assert len(backend) == 3 * 2 + 2 + 1  # user windows, org windows, ip window
    clock.advance(21)  # two of the longest window
    await limiter.check(ip="10.0.0.9")
    assert len(backend) == 1


# Both backends: the same contract


async def test_burst_limit_and_retry(backend: RateLimitBackend) -> None:
    limiter = RateLimiter(backend, SETTINGS)
    decisions = [await limiter.check(org="acme", user="alice", ip="10.0.0.1") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.scope == "user" for d in decisions)
    refused = decisions[-1]
    # Up to two windows when the burst straddles a window boundary (sliding-window counter).
    assert 0 < refused.retry_after_s <= 2.05
    assert refused.headers()["Retry-After"] == str(max(1, math.ceil(refused.retry_after_s)))
    # Another user of the org has a budget of their own.
    assert (await limiter.check(org="acme", user="bob", ip="10.0.0.1")).allowed
    await asyncio.sleep(refused.retry_after_s + 0.05)
    assert (await limiter.check(org="acme", user="alice", ip="10.0.0.1")).allowed


async def test_org_limit_and_refusals_consume_nothing(backend: RateLimitBackend) -> None:
    limiter = RateLimiter(backend, SETTINGS)
    alice = [await limiter.check(org="acme", user="alice") for _ in range(10)]
    assert [d.allowed for d in alice] == [True] * 5 + [False] * 5
    # Alice's five refusals did not count against the org (8 per second): Bob gets 3.
    bob = [await limiter.check(org="acme", user="bob") for _ in range(4)]
    assert [d.allowed for d in bob] == [True, True, True, False]
    assert bob[-1].scope == "org" and bob[-1].limit == 8
    assert (await limiter.check(org="other", user="bob")).allowed


async def test_concurrent_checks_are_atomic(backend: RateLimitBackend) -> None:
    limiter = RateLimiter(backend, SETTINGS)
    decisions = await asyncio.gather(
        *(limiter.check(org="acme", user="alice", ip="10.0.0.1") for _ in range(40))
    )
    assert sum(d.allowed for d in decisions) == 5


async def test_tiers_differ(backend: RateLimitBackend) -> None:
    limiter = RateLimiter(backend, SETTINGS, tier_of=TIERS_OF_ORGS.__getitem__)
    free = [await limiter.check(org="acme", user="alice") for _ in range(12)]
    pro = [await limiter.check(org="bigco", user="alice") for _ in range(12)]
    assert sum(d.allowed for d in free) == 5
    assert sum(d.allowed for d in pro) == 10
    assert pro[-1].limit == 10


# REST: the middleware on a real port


async def test_middleware_answers_429_with_headers(
    serve: Callable[..., Awaitable[TestServer]], http: aiohttp.ClientSession, signer: TokenSigner
) -> None:
    server = await serve(RateLimiter(InProcessRateLimitBackend(), SETTINGS))
    url = str(server.make_url("/api/things"))
    headers = bearer(signer, "acme", "alice")
    seen = []
    for _ in range(5):
        async with http.get(url, headers=headers) as response:
            assert response.status == 200
            seen.append(response.headers["RateLimit-Remaining"])
            assert response.headers["RateLimit-Limit"] == "5"
            assert int(response.headers["RateLimit-Reset"]) >= 1
            assert "Retry-After" not in response.headers
    assert seen == ["4", "3", "2", "1", "0"]
    async with http.get(url, headers=headers) as response:
        assert response.status == 429
        assert response.content_type == "application/json"
        retry_after = int(response.headers["Retry-After"])
        assert 1 <= retry_after <= 2
        assert response.headers["RateLimit-Limit"] == "5"
        assert response.headers["RateLimit-Remaining"] == "0"
        assert int(response.headers["RateLimit-Reset"]) >= 1
        body = await response.json()
    assert body["error"]["code"] == "rate_limited"
    assert "retry in" in body["error"]["message"]
    assert body["error"]["details"] == {"scope": "user", "retryAfter": retry_after}


async def test_tiers_differ_on_rest(
    serve: Callable[..., Awaitable[TestServer]], http: aiohttp.ClientSession, signer: TokenSigner
) -> None:
    async def tier_of(org: str) -> str:  # e.g. a cached look-up of the org's plan
        return TIERS_OF_ORGS[org]

    server = await serve(RateLimiter(InProcessRateLimitBackend(), SETTINGS), tier_of=tier_of)
    url = str(server.make_url("/api/things"))
    free = await statuses(http, url, 8, bearer(signer, "acme", "alice"))
    pro = await statuses(http, url, 8, bearer(signer, "bigco", "alice"))
    assert free == [200] * 5 + [429] * 3
    assert pro == [200] * 8


async def test_unauthenticated_requests_are_limited_per_ip(
    serve: Callable[..., Awaitable[TestServer]], http: aiohttp.ClientSession, signer: TokenSigner
) -> None:
    server = await serve(RateLimiter(InProcessRateLimitBackend(), SETTINGS))
    url = str(server.make_url("/api/info"))
    assert await statuses(http, url, 4) == [200, 200, 200, 429]
    # A bad token is unauthenticated traffic too (token guessing is limited per IP).
    assert await statuses(http, url, 1, {"Authorization": "Bearer forged"}) == [429]
    async with http.get(url) as response:
        assert (await response.json())["error"]["details"]["scope"] == "anonymous_ip"
    # Authenticated users behind the same address have their own, higher budget.
    assert await statuses(http, url, 5, bearer(signer, "acme", "alice")) == [200] * 5
    # Health checks are never limited.
    assert await statuses(http, str(server.make_url("/healthz")), 10) == [200] * 10


async def test_forwarded_addresses_count_only_behind_trusted_proxies(
    serve: Callable[..., Awaitable[TestServer]], http: aiohttp.ClientSession
) -> None:
    behind_proxy = RateLimitSettings(
        tiers=SETTINGS.tiers, anonymous_ip=SETTINGS.anonymous_ip, trusted_proxy_hops=1
    )
    proxied = await serve(RateLimiter(InProcessRateLimitBackend(), behind_proxy))
    direct = await serve(RateLimiter(InProcessRateLimitBackend(), SETTINGS))
    for client in ("203.0.113.7", "203.0.113.8"):
        forwarded = {"X-Forwarded-For": f"198.51.100.1, {client}"}
        url = str(proxied.make_url("/api/info"))
        assert await statuses(http, url, 4, forwarded) == [200, 200, 200, 429]
    # Without a trusted proxy the header is the client's word: it buys nothing.
    spoofed = [
        (await statuses(http, str(direct.make_url("/api/info")), 1, {"X-Forwarded-For": ip}))[0]
        for ip in ("1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4")
    ]
    assert spoofed == [200, 200, 200, 429]
    assert forwarded_client_ip("10.0.0.2", "a, b, c", 2) == "b"
    assert forwarded_client_ip("10.0.0.2", "a", 3) == "a"
    assert forwarded_client_ip("10.0.0.2", None, 1) == "10.0.0.2"


# Socket.IO events


async def test_events_are_limited_per_user() -> None:
    rejected: list[str] = []
    limiter = RateLimiter(
        InProcessRateLimitBackend(),
        SETTINGS,
        tier_of=TIERS_OF_ORGS.__getitem__,
        on_reject=rejected.append,
    )
    decisions = [await limiter.check_event("acme", "alice", "10.0.0.1") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    error = decisions[-1].error()
    # The sliding-window counter says 1 or 2 s, depending on where the window boundary falls.
    assert error["code"] == "rate_limited" and re.search(r"retry in [12] s", error["message"])
    assert rejected == ["user"]
    assert (await limiter.check_event("acme", "bob", "10.0.0.1")).allowed
    pro = [await limiter.check_event("bigco", "alice", "10.0.0.1") for _ in range(10)]
    assert all(d.allowed for d in pro)


# Failing open


async def test_fail_open_when_redis_is_stopped(
    redis_server: RedisServer,
    serve: Callable[..., Awaitable[TestServer]],
    http: aiohttp.ClientSession,
    signer: TokenSigner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = redis_client(redis_server.url)
    failures: list[None] = []
    unchecked: list[None] = []
    limiter = RateLimiter(
        RedisRateLimitBackend(client, timeout_s=SETTINGS.backend_timeout_s),
        SETTINGS,
        on_backend_failure=lambda: failures.append(None),
        on_fail_open=lambda: unchecked.append(None),
    )
    server = await serve(limiter)
    url = str(server.make_url("/api/things"))
    headers = bearer(signer, "acme", "alice")
    try:
        async with http.get(url, headers=headers) as response:
            assert response.status == 200 and response.headers["RateLimit-Remaining"] == "4"

        redis_server.stop()
        caplog.set_level(logging.WARNING, logger="leadstream.server.ratelimit")
        started = time.perf_counter()
        answers = []
        for _ in range(20):
            async with http.get(url, headers=headers) as response:
                answers.append(response.status)
                assert "RateLimit-Remaining" not in response.headers
        assert answers == [200] * 20  # over the limit of 5, yet allowed
        assert time.perf_counter() - started < 5
        assert limiter.backend_failures >= 1 and len(failures) == limiter.backend_failures
        assert limiter.failed_open == 20 and len(unchecked) == 20
        failure_lines = [r for r in caplog.records if "backend failed" in r.getMessage()]
        assert len(failure_lines) == 1  # one line, not one per request

        # Redis back: after the retry pause, limits apply again.
        redis_server.start()
        await asyncio.sleep(SETTINGS.backend_retry_s + 0.05)
        codes = await statuses(http, url, 7, headers)
        assert codes.count(429) >= 1
        assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        await client.aclose()


# Configuration


def test_settings_from_env() -> None:
    # Read by the one settings loader, into the limiter's typed part of it.
    def from_env(env: dict[str, str]) -> RateLimitSettings:
        return Settings.from_env(env).rate_limits

    settings = from_env(
        {
            "LEADSTREAM_RATE_FREE_USER": "30/1s, 600/1m",
            "LEADSTREAM_RATE_ANONYMOUS_IP": "5/s",
            "LEADSTREAM_TRUSTED_PROXY_HOPS": "1",
        }
    )
    assert settings.enabled
    assert settings.tiers["free"].user == (Limit(30, 1), Limit(600, 60))
    assert settings.tiers["pro"] == RateLimitSettings().tiers["pro"]
    assert settings.anonymous_ip == (Limit(5, 1),)
    assert settings.trusted_proxy_hops == 1
    assert not from_env({"LEADSTREAM_RATE_LIMITS": "off"}).enabled
    with pytest.raises(ConfigError, match="LEADSTREAM_RATE_PRO_ORG"):
        from_env({"LEADSTREAM_RATE_PRO_ORG": "lots"})
    with pytest.raises(ConfigError, match="LEADSTREAM_RATE_LIMITS"):
        from_env({"LEADSTREAM_RATE_LIMITS": "maybe"})
    with pytest.raises(ConfigError, match="default rate-limit tier"):
        from_env({"LEADSTREAM_RATE_DEFAULT_TIER": "gold"})


async def test_disabled_limits_let_everything_through() -> None:
    limiter = RateLimiter(InProcessRateLimitBackend(), RateLimitSettings(enabled=False))
    decisions = [await limiter.check(org="acme", user="alice") for _ in range(100)]
    assert all(d.allowed and not d.headers() for d in decisions)
