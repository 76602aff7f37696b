"""Prometheus metrics of one app, served at `/metrics` in the text format.

Every metric lives on the `CollectorRegistry` of one `Metrics` object (no
module-level metrics), so several apps in one process (tests, benchmarks)
keep separate figures. The code reports what happens through the named
methods (`socket_connected`, `event_in`, `tool_finished`, ...); the HTTP
middleware (`metrics_middleware`, server/http/middleware.py) times every
request by its route's canonical path (`/api/leads/{id}`, never the raw
URL), so the latency histograms have bounded labels and p50/p95/p99 come
from `histogram_quantile` in Prometheus.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Seconds; from a fast cached read to a slow model-backed request.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TOOL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Seconds a garbage collection stopped the process: young ones take about a
# millisecond, a full one over a large heap hundreds.
INF = float("inf")
GC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
UNMATCHED_ROUTE = "unmatched"
CLIENT_CLOSED = 499  # nginx's status for a request whose client went away
# Any other method token is labelled "other": clients must not create label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The metric families of one app, and the methods that move them.

    :param registry: where the families are registered [a new, private one].
    :param namespace: the name prefix of every family.
    :param slow_store_call_s: a store call taking longer logs a warning line.
    :param unlabelled_routes: canonical routes the latency histogram skips
        (long-lived requests whose duration is not a latency: the Socket.IO
        transport's long polls and websockets).
    :param process_metrics: also expose process CPU, memory and GC figures.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        namespace: str = "leadstream",
        slow_store_call_s: float = 0.5,
        unlabelled_routes: Sequence[str] = ("/socket.io/",),
        process_metrics: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.slow_store_call_s = slow_store_call_s
        self._skip_latency = frozenset(unlabelled_routes)
        self._namespace = namespace
        ns, reg = namespace, self.registry
        if process_metrics:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)
            # Which process answered: with `serve --workers N` each scrape reaches one
            # worker, and `leadstream loadtest` tells their histograms apart by it.
            Info("process", "This server process.", namespace=ns, registry=reg).info(
                {"pid": str(os.getpid())}
            )

        self.request_seconds = Histogram(
            "http_request_duration_seconds",
            "REST request latency by route's canonical path.",
            ["method", "route"],
            namespace=ns,
            registry=reg,
            buckets=REQUEST_BUCKETS,
        )
        self.http_errors = Counter(
            "http_errors",
            "REST responses with status 400 or above.",
            ["route", "status"],
            namespace=ns,
            registry=reg,
        )
        self.sockets_connected = Gauge(
            "sockets_connected",
            "Socket.IO connections open on this instance.",
            namespace=ns,
            registry=reg,
        )
        self.events_received = Counter(
            "socketio_events_received",
            "Socket.IO events received from clients, by event.",
            ["event"],
            namespace=ns,
            registry=reg,
        )
        self.events_sent = Counter(
            "socketio_events_sent",
            "Socket.IO events emitted to clients or rooms, by event.",
            ["event"],
            namespace=ns,
            registry=reg,
        )
        self.agent_turns = Counter(
            "agent_turns",
            "Finished agent turns by outcome (done, stopped, error).",
            ["outcome"],
            namespace=ns,
            registry=reg,
        )
        self.agent_tokens = Counter(
            "agent_tokens",
            "Model tokens by kind (prompt, completion).",
            ["kind"],
            namespace=ns,
            registry=reg,
        )
        self.tool_seconds = Histogram(
            "tool_duration_seconds",
            "Agent tool call latency by tool and outcome.",
            ["tool", "outcome"],
            namespace=ns,
            registry=reg,
            buckets=TOOL_BUCKETS,
        )
        self.cache_hits = Counter(
            "cache_hits",
            "Cache lookups answered from the cache, by cache.",
            ["cache"],
            namespace=ns,
            registry=reg,
        )
        self.cache_misses = Counter(
            "cache_misses",
            "Cache lookups not in the cache, by cache.",
            ["cache"],
            namespace=ns,
            registry=reg,
        )
        self.job_queue_depth = Gauge(
            "job_queue_depth",
            "Jobs waiting to run, by queue.",
            ["queue"],
            namespace=ns,
            registry=reg,
        )
        self.job_failures = Counter(
            "job_failures",
            "Jobs that failed (each try), by kind.",
            ["kind"],
            namespace=ns,
            registry=reg,
        )
        self.rate_limit_rejections = Counter(
            "rate_limit_rejections",
            "Requests and events refused by a rate limit, by scope.",
            ["scope"],
            namespace=ns,
            registry=reg,
        )
        self.rate_limit_backend_failures = Counter(
            "rate_limit_backend_failures",
            "Rate-limit backend (Redis) calls that failed.",
            namespace=ns,
            registry=reg,
        )
        self.rate_limit_failed_open = Counter(
            "rate_limit_failed_open",
            "Requests allowed unchecked while the backend failed.",
            namespace=ns,
            registry=reg,
        )
        self.store_seconds = Histogram(
            "store_query_duration_seconds",
            "Store call latency by operation.",
            ["operation"],
            namespace=ns,
            registry=reg,
            buckets=STORE_BUCKETS,
        )
        self.store_slow_calls = Counter(
            "store_slow_queries",
            "Store calls slower than the slow-query threshold.",
            ["operation"],
            namespace=ns,
            registry=reg,
        )

    # REST

    def request_finished(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one REST request (the middleware calls this)."""
        if route not in self._skip_latency:
            label = method if method in METHODS else "other"
            self.request_seconds.labels(label, route).observe(seconds)
        if status >= 400:
            self.http_errors.labels(route, str(status)).inc()

    async def handle_metrics(self, request: web.Request) -> web.Response:
        """`GET /metrics`: the registry in the format the scraper asks for (text by default)."""
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encode(self.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    # Socket.IO

    def socket_connected(self) -> None:
        self.sockets_connected.inc()

    def socket_disconnected(self) -> None:
        self.sockets_connected.dec()

    def event_in(self, event: str) -> None:
        """A client event arrived. Call it for registered events only (bounded labels)."""
        self.events_received.labels(event).inc()

    def event_out(self, event: str, count: int = 1) -> None:
        """`count` emits of `event` (one per emit call, not per recipient)."""
        self.events_sent.labels(event).inc(count)

    # Agent

    def agent_turn(self, outcome: str = "done") -> None:
        """A turn of the agent loop ended: `done`, `stopped` or `error`."""
        self.agent_turns.labels(outcome).inc()

    def agent_tokens_used(self, prompt: int, completion: int) -> None:
        self.agent_tokens.labels("prompt").inc(prompt)
        self.agent_tokens.labels("completion").inc(completion)

    def tool_finished(self, tool: str, seconds: float, *, ok: bool = True) -> None:
        self.tool_seconds.labels(tool, "ok" if ok else "error").observe(seconds)

    # Cache

    def cache_hit(self, cache: str) -> None:
        self.cache_hits.labels(cache).inc()

    def cache_miss(self, cache: str) -> None:
        self.cache_misses.labels(cache).inc()

    # Jobs

    def set_job_queue_depth(self, depth: int, queue: str = "default") -> None:
        self.job_queue_depth.labels(queue).set(depth)

    def job_failed(self, kind: str) -> None:
        self.job_failures.labels(kind).inc()

    # Rate limits (RateLimiter's on_reject / on_backend_failure / on_fail_open)

    def rate_limited(self, scope: str) -> None:
        self.rate_limit_rejections.labels(scope).inc()

    def rate_limit_backend_failed(self) -> None:
        self.rate_limit_backend_failures.inc()

    def rate_limit_allowed_unchecked(self) -> None:
        self.rate_limit_failed_open.inc()

    # Store

    def store_call_finished(self, operation: str, seconds: float) -> None:
        """Record one store call; past `slow_store_call_s` also log a warning line."""
        self.store_seconds.labels(operation).observe(seconds)
        if seconds >= self.slow_store_call_s:
            self.store_slow_calls.labels(operation).inc()
            log.warning(
                "slow store call: %s took %.3f s (threshold %.3f s)",
                operation,
                seconds,
                self.slow_store_call_s,
            )

    # Garbage collection

    def watch_gc(self, *, log_over_s: float = 0.1) -> GCPauses:
        """Time this process's garbage collections into `leadstream_gc_pause_seconds`
        (see `GCPauses`); call `close()` on the result to stop."""
        pauses = GCPauses(log_over_s=log_over_s, namespace=self._namespace)
        self.registry.register(pauses)
        pauses.start()
        return pauses

    def timed_store_call(self, operation: str) -> StoreCallTimer:
        """Time a store call: `async with metrics.timed_store_call("leads.list"): ...`,
        or as a decorator of an async function: `@metrics.timed_store_call("leads.list")`.
        """
        return StoreCallTimer(self, operation)


class GCPauses:
    """Times every garbage collection of the process (`gc.callbacks`): while a
    collection runs, nothing else in the process does, so its duration is a
    pause every client waits out.

    Exposed as the histogram `leadstream_gc_pause_seconds{generation}` and the
    gauge `leadstream_gc_pause_max_seconds{generation}` (longest since start).
    The callback only counts into plain lists (no locks: a collection can start
    while any lock is held); the figures become metrics when scraped, and a
    pause longer than `log_over_s` is logged from the event loop just after it.

    :param log_over_s: pauses at least this long log a warning (0: none).
    :param namespace: the metric name prefix.
    """

    def __init__(self, *, log_over_s: float = 0.1, namespace: str = "leadstream") -> None:
        self.log_over_s = log_over_s
        self._namespace = namespace
        self._counts = [[0] * (len(GC_BUCKETS) + 1) for _ in range(3)]
        self._sums = [0.0, 0.0, 0.0]
        self._longest = [0.0, 0.0, 0.0]
        self._started = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Begin timing (from the event loop's thread, if slow pauses are to be logged)."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._loop = None

    @property
    def longest(self) -> float:
        """The longest pause seen, in seconds, any generation."""
        return max(self._longest)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        seconds = time.perf_counter() - self._started
        generation = min(int(info.get("generation", 2)), 2)
        self._counts[generation][bisect.bisect_left(GC_BUCKETS, seconds)] += 1
        self._sums[generation] += seconds
        if seconds > self._longest[generation]:
            self._longest[generation] = seconds
        loop = self._loop
        slow = self.log_over_s and seconds >= self.log_over_s
        if slow and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._log_pause, generation, seconds, info)

    def _log_pause(self, generation: int, seconds: float, info: dict[str, Any]) -> None:
        log.warning(
            "garbage collection of generation %d stopped the process for %.0f ms "
            "(%d objects freed)",
            generation,
            seconds * 1000,
            info.get("collected", 0),
        )

    def collect(self) -> Iterator[Metric]:
        """The figures as Prometheus metric families (the registry calls this)."""
        ns = self._namespace
        pauses = HistogramMetricFamily(
            f"{ns}_gc_pause_seconds",
            "Garbage collections by generation and how long each stopped the process.",
            labels=["generation"],
        )
        longest = GaugeMetricFamily(
            f"{ns}_gc_pause_max_seconds",
            "The longest garbage collection pause since start, by generation.",
            labels=["generation"],
        )
        for generation in range(3):
            cumulative, buckets = 0, []
            for bound, count in zip((*GC_BUCKETS, INF), self._counts[generation], strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == INF else str(bound), cumulative))
            label = [str(generation)]
            pauses.add_metric(label, buckets, self._sums[generation])
            longest.add_metric(label, self._longest[generation])
        yield pauses
        yield longest


class StoreCallTimer:
    """Times one store call into `Metrics.store_call_finished`; failed calls count too.

    :param metrics: where the figure goes.
    :param operation: the operation's label (`leads.list`, `changes.since`, ...).
    """

    __slots__ = ("_metrics", "_operation", "_started")

    def __init__(self, metrics: Metrics, operation: str) -> None:
        self._metrics = metrics
        self._operation = operation
        self._started = 0.0

    async def __aenter__(self) -> StoreCallTimer:
        self._started = time.perf_counter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._metrics.store_call_finished(self._operation, time.perf_counter() - self._started)

    def __call__(self, function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        metrics, operation = self._metrics, self._operation

        @functools.wraps(function)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            # A timer per call: one shared instance would mix concurrent calls' start times.
            async with StoreCallTimer(metrics, operation):
                return await function(*args, **kwargs)

        return timed


def route_of(request: web.Request) -> str:
    """The canonical path of the route that matched (`/api/leads/{id}`), or `unmatched`."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED_ROUTE
    return resource.canonical
