"""/metrics: every family is exposed in the Prometheus text format, and the
values move when traffic flows (a small app with the middleware on a real port).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from support import Scrape

from leadstream.server.http.errors import ApiError
from leadstream.server.http.middleware import error_middleware, metrics_middleware
from leadstream.server.metrics import Metrics
from leadstream.server.ratelimit import (
    InProcessRateLimitBackend,
    Limit,
    RateLimiter,
    RateLimitSettings,
    Tier,
)
from leadstream.server.ratelimit.middleware import rate_limit_middleware

FAMILIES = (
    "leadstream_http_request_duration_seconds",
    "leadstream_http_errors",
    "leadstream_sockets_connected",
    "leadstream_socketio_events_received",
    "leadstream_socketio_events_sent",
    "leadstream_agent_turns",
    "leadstream_agent_tokens",
    "leadstream_tool_duration_seconds",
    "leadstream_cache_hits",
    "leadstream_cache_misses",
    "leadstream_job_queue_depth",
    "leadstream_job_failures",
    "leadstream_rate_limit_rejections",
    "leadstream_rate_limit_backend_failures",
    "leadstream_rate_limit_failed_open",
    "leadstream_store_query_duration_seconds",
    "leadstream_store_slow_queries",
)
TIGHT = RateLimitSettings(
    tiers={"free": Tier("free", user=(Limit(2, 1),), org=(Limit(10, 1),), ip=(Limit(10, 1),))}
)


def build_app(metrics: Metrics) -> web.Application:
    """The middleware order server/http/app.py uses: metrics, errors, rate limits, then handlers."""
    limiter = RateLimiter(InProcessRateLimitBackend(), TIGHT, on_reject=metrics.rate_limited)

    def principal_of(request: web.Request) -> tuple[str, str] | None:
        user = request.headers.get("X-User")
        return ("acme", user) if user else None

    async def item(request: web.Request) -> web.Response:
        if request.match_info["id"] == "missing":
            raise ApiError(404, "not_found", "no such item")
        return web.json_response({"id": request.match_info["id"]})

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("the handler failed")

    app = web.Application(
        middlewares=[
            metrics_middleware(metrics),
            error_middleware(),
            rate_limit_middleware(limiter, principal_of=principal_of),
        ]
    )
    app.router.add_get("/api/items/{id}", item)
    app.router.add_get("/boom", boom)
    app.router.add_get("/metrics", metrics.handle_metrics)
    return app


@pytest.fixture
def serve(
    serve_app: Callable[[web.Application], Awaitable[TestServer]],
) -> Callable[[Metrics], Awaitable[TestServer]]:
    async def start(metrics: Metrics) -> TestServer:
        return await serve_app(build_app(metrics))

    return start


async def scrape(http: aiohttp.ClientSession, server: TestServer) -> Scrape:
    async with http.get(server.make_url("/metrics")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return Scrape(await response.text())


async def get(http: aiohttp.ClientSession, server: TestServer, path: str, **headers: str) -> int:
    async with http.get(server.make_url(path), headers=headers) as response:
        await response.read()
        return response.status


async def test_every_family_is_exposed(
    serve: Callable[[Metrics], Awaitable[TestServer]], http: aiohttp.ClientSession
) -> None:
    server = await serve(Metrics())
    families = (await scrape(http, server)).families
    for name in FAMILIES:
        assert name in families, name
    assert families["leadstream_http_request_duration_seconds"].type == "histogram"
    assert families["leadstream_sockets_connected"].type == "gauge"
    assert families["leadstream_http_errors"].type == "counter"
    assert "process_resident_memory_bytes" in families


async def test_request_latency_and_errors_move_with_traffic(
    serve: Callable[[Metrics], Awaitable[TestServer]], http: aiohttp.ClientSession
) -> None:
    server = await serve(Metrics())
    for path in ("/api/items/1", "/api/items/2", "/api/items/3", "/api/items/missing"):
        await get(http, server, path)
    assert await get(http, server, "/boom") == 500
    assert await get(http, server, "/no/such/route") == 404
    after = await scrape(http, server)

    latency = "leadstream_http_request_duration_seconds"
    # One series for the route, labelled by its canonical path, never the raw URL.
    assert after.value(f"{latency}_count", method="GET", route="/api/items/{id}") == 4
    assert after.label_values(f"{latency}_count", "route") >= {"/api/items/{id}", "/boom"}
    assert not any("/api/items/1" in r for r in after.label_values(f"{latency}_count", "route"))
    # Buckets for p50/p95/p99: cumulative, the last one holding every request.
    buckets = [
        s
        for s in after.samples
        if s.name == f"{latency}_bucket" and s.labels.get("route") == "/api/items/{id}"
    ]
    assert len(buckets) > 10 and buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 4
    assert after.value(f"{latency}_sum", method="GET", route="/api/items/{id}") > 0

    errors = "leadstream_http_errors_total"
    assert after.value(errors, route="/api/items/{id}", status="404") == 1
    assert after.value(errors, route="/boom", status="500") == 1
    assert after.value(errors, route="unmatched", status="404") == 1

    # Rate-limit rejections, from the limiter's on_reject callback.
    statuses = [await get(http, server, "/api/items/1", **{"X-User": "alice"}) for _ in range(3)]
    assert statuses == [200, 200, 429]
    again = await scrape(http, server)
    assert again.value("leadstream_rate_limit_rejections_total", scope="user") == 1
    assert again.value(errors, route="/api/items/{id}", status="429") == 1
    assert again.value(f"{latency}_count", method="GET", route="/api/items/{id}") == 7


async def test_event_methods_move_their_families(
    serve: Callable[[Metrics], Awaitable[TestServer]], http: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    server = await serve(metrics)
    metrics.socket_connected()
    metrics.socket_connected()
    metrics.socket_disconnected()
    metrics.event_in("chat:send")
    metrics.event_in("chat:send")
    metrics.event_out("chat:delta", 3)
    metrics.agent_turn()
    metrics.agent_turn("stopped")
    metrics.agent_tokens_used(prompt=120, completion=30)
    metrics.tool_finished("search_leads", 0.2)
    metrics.tool_finished("search_leads", 0.3, ok=False)
    metrics.cache_hit("search")
    metrics.cache_miss("search")
    metrics.cache_miss("search")
    metrics.set_job_queue_depth(4)
    metrics.job_failed("export")
    metrics.rate_limit_backend_failed()
    metrics.rate_limit_allowed_unchecked()
    metrics.rate_limit_allowed_unchecked()
    now = await scrape(http, server)

    assert now.value("leadstream_sockets_connected") == 1
    assert now.value("leadstream_socketio_events_received_total", event="chat:send") == 2
    assert now.value("leadstream_socketio_events_sent_total", event="chat:delta") == 3
    assert now.value("leadstream_agent_turns_total", outcome="done") == 1
    assert now.value("leadstream_agent_turns_total", outcome="stopped") == 1
    assert now.value("leadstream_agent_tokens_total", kind="prompt") == 120
    assert now.value("leadstream_agent_tokens_total", kind="completion") == 30
    tool = "leadstream_tool_duration_seconds"
    assert now.value(f"{tool}_count", tool="search_leads", outcome="ok") == 1
    assert now.value(f"{tool}_count", tool="search_leads", outcome="error") == 1
    assert now.value("leadstream_cache_hits_total", cache="search") == 1
    assert now.value("leadstream_cache_misses_total", cache="search") == 2
    assert now.value("leadstream_job_queue_depth", queue="default") == 4
    assert now.value("leadstream_job_failures_total", kind="export") == 1
    assert now.value("leadstream_rate_limit_backend_failures_total") == 1
    assert now.value("leadstream_rate_limit_failed_open_total") == 2


async def test_store_calls_are_timed_and_slow_ones_logged(
    serve: Callable[[Metrics], Awaitable[TestServer]],
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics(slow_store_call_s=0.05)
    server = await serve(metrics)

    @metrics.timed_store_call("leads.get")
    async def get_lead(lead_id: str) -> dict[str, str]:
        return {"id": lead_id}

    caplog.set_level(logging.WARNING, logger="leadstream.server.metrics")
    results = await asyncio.gather(*(get_lead(str(i)) for i in range(5)))
    assert results[3] == {"id": "3"}
    async with metrics.timed_store_call("leads.list"):
        await asyncio.sleep(0.06)
    with pytest.raises(ValueError):
        async with metrics.timed_store_call("leads.upsert"):
            raise ValueError("bad row")
    now = await scrape(http, server)

    store = "leadstream_store_query_duration_seconds"
    assert now.value(f"{store}_count", operation="leads.get") == 5
    assert now.value(f"{store}_count", operation="leads.list") == 1
    assert now.value(f"{store}_count", operation="leads.upsert") == 1
    assert now.value(f"{store}_sum", operation="leads.list") >= 0.06
    assert now.value("leadstream_store_slow_queries_total", operation="leads.list") == 1
    assert now.value("leadstream_store_slow_queries_total", operation="leads.get") == 0
    slow = [r.getMessage() for r in caplog.records if "slow store call" in r.getMessage()]
    assert len(slow) == 1 and "leads.list" in slow[0]


async def test_each_app_has_its_own_metrics(
    serve: Callable[[Metrics], Awaitable[TestServer]], http: aiohttp.ClientSession
) -> None:
    busy, idle = await serve(Metrics()), await serve(Metrics())
    for _ in range(3):
        await get(http, busy, "/api/items/1")
    route = {"method": "GET", "route": "/api/items/{id}"}
    count = "leadstream_http_request_duration_seconds_count"
    assert (await scrape(http, busy)).value(count, **route) == 3
    assert (await scrape(http, idle)).value(count, **route) == 0


async def test_openmetrics_on_request(
    serve: Callable[[Metrics], Awaitable[TestServer]], http: aiohttp.ClientSession
) -> None:
    server = await serve(Metrics())
    accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with http.get(server.make_url("/metrics"), headers=accept) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await response.text()).rstrip().endswith("# EOF")
