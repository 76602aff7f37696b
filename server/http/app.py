"""The application factory: `create_app(settings) -> web.Application`.

Everything the server holds is built here from one `Settings` object, in
named steps that `create_app` calls in order:

1. `build_core`: metrics, the store, the token signer, Redis connections and
   the rate limiter: what every other part uses;
2. `middleware_chain`: the request middlewares, in order (why: see there);
3. `build_realtime`: the Socket.IO server, its event gate, the emitter and
   the lead change feed;
4. `build_jobs`: the job queue and the export and import services;
5. `build_agent`: the chat model, the lead provider and the agent loop;
6. `build_chat`: the chat service on the socket, and the stop relay;
7. `share_on_app` and `add_routes`: what routes find on the app, the REST
   routes, `/metrics` and the static files;
8. `build_lifecycle`: the `ServerLifecycle` (lifecycle.py) that aiohttp's
   `cleanup_ctx` runs: it opens the resources at start-up on one
   `AsyncExitStack`, each registered as soon as it is opened, so a failed
   start-up and the shutdown both close what was opened, in reverse order.

Nothing here connects to anything: Redis clients connect on first use, the
store opens at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from aiohttp import web
from aiohttp.typedefs import Middleware

from leadstream.agent.budget import DailyBudget
from leadstream.agent.loop import AgentLoop
from leadstream.agent.model import ChatModel
from leadstream.agent.planner import OFFLINE_PLANNER_LABEL, OfflinePlanner
from leadstream.agent.providers.base import LeadProvider
from leadstream.agent.tokens import PriceTable, TokenCounter
from leadstream.agent.tools import ExportRequest, ToolError
from leadstream.realtime.acks import EventGate
from leadstream.realtime.chat import ChatService, register_chat_events
from leadstream.realtime.emitter import Emitter
from leadstream.realtime.feed import LeadChangeFeed, register_feed_events
from leadstream.realtime.limits import ConnectionLimits
from leadstream.realtime.remote_stop import RemoteStop
from leadstream.realtime.server import SocketServer, create_socket_server
from leadstream.server.auth import TokenSigner
from leadstream.server.config import Settings
from leadstream.server.http.appkeys import (
    EXPORTS,
    IMPORTS,
    LABELS,
    METRICS,
    PAGE_CACHE,
    READINESS,
    SETTINGS,
    SIGNER,
    SIO,
    STORE,
)
from leadstream.server.http.compression import ResponseCompression, compression_middleware
from leadstream.server.http.cors import cors_middleware, socket_origins
from leadstream.server.http.lifecycle import ServerLifecycle
from leadstream.server.http.middleware import (
    auth_middleware,
    bearer_principal,
    error_middleware,
    metrics_middleware,
)
from leadstream.server.http.page_cache import InProcessPageCache, PageCache, RedisPageCache
from leadstream.server.http.readiness import Readiness
from leadstream.server.http.routes import (
    conversations,
    dev,
    exports,
    imports,
    info,
    leads,
    openapi,
    usage,
)
from leadstream.server.http.routes.info import STATIC
from leadstream.server.http.static_assets import StaticAssets
from leadstream.server.jobs.exports import ExportService
from leadstream.server.jobs.imports import ImportService
from leadstream.server.jobs.queue import InProcessJobQueue, JobRefused, RedisJobQueue
from leadstream.server.logs import request_id_middleware
from leadstream.server.metrics import Metrics
from leadstream.server.ratelimit import InProcessRateLimitBackend, RateLimitBackend, RateLimiter
from leadstream.server.ratelimit.middleware import client_ip, rate_limit_middleware
from leadstream.server.ratelimit.redis_backend import RedisRateLimitBackend
from leadstream.server.redis_connections import RATE_LIMITS, RedisClient, RedisConnections
from leadstream.server.services import (
    choose_model,
    choose_provider,
    export_service,
    import_service,
    job_queue,
    open_store,
)
from leadstream.store.base import Store

# The OpenAI SDK's default endpoint, checked by /readyz when no OPENAI_BASE_URL is set.
OPENAI_URL = "https://api.openai.com/v1"
REST_ROUTES = (info, dev, leads, exports, imports, conversations, usage, openapi)


def create_app(
    settings: Settings,
    *,
    model: ChatModel | None = None,
    provider: Callable[[Store], LeadProvider] | None = None,
) -> web.Application:
    """Build the server. `settings.secret` must be set (see `Settings.with_secret`).

    :param model: the chat model [an OpenAI-compatible model when
        `OPENAI_API_KEY` is set, else the offline planner].
    :param provider: makes the lead provider from the store [RocketReach when
        `ROCKETREACH_API_KEY` is set, else the local people directory].
    """
    core = build_core(settings)
    app = web.Application(
        middlewares=middleware_chain(settings, core),
        # JSON bodies; the CSV import streams its body under its own larger limit.
        client_max_size=settings.max_json,
    )
    realtime = build_realtime(settings, core)
    realtime.sio.attach(app)
    jobs = build_jobs(settings, core, realtime.emitter)
    agent = build_agent(settings, core, model=model, provider=provider)
    chat = build_chat(settings, core, realtime, jobs, agent)
    share_on_app(app, settings, core, realtime, jobs, agent)
    add_routes(app, core.metrics)
    app.cleanup_ctx.append(build_lifecycle(settings, core, realtime, jobs, agent, chat).run)
    return app


# -- 1. what every part uses -------------------------------------------------


@dataclass(frozen=True)
class Core:
    """What every other part of the server uses.

    :param redis: the Redis connections when `REDIS_URL` is set; `redis_client`
        is their shared client (page cache, stop relay, readiness, job queue).
    """

    metrics: Metrics
    store: Store
    signer: TokenSigner
    redis: RedisConnections | None
    redis_client: RedisClient | None
    limiter: RateLimiter


def build_core(settings: Settings) -> Core:
    """The store (not opened yet), Redis clients (not connected yet), the
    rate limiter on Redis when there is one, the signer and the metrics."""
    metrics = Metrics(slow_store_call_s=settings.slow_query_ms / 1000)
    store = open_store(settings, on_call=metrics.store_call_finished)
    redis = RedisConnections(settings.redis_url) if settings.redis_url else None
    backend: RateLimitBackend = InProcessRateLimitBackend()
    if redis is not None:
        timeout_s = settings.rate_limits.backend_timeout_s
        backend = RedisRateLimitBackend(redis.client(RATE_LIMITS), timeout_s=timeout_s)
    limiter = RateLimiter(
        backend,
        settings.rate_limits,
        tier_of=lambda org: settings.org_tiers.get(org, settings.rate_limits.default_tier),
        on_reject=metrics.rate_limited,
        on_backend_failure=metrics.rate_limit_backend_failed,
        on_fail_open=metrics.rate_limit_allowed_unchecked,
    )
    return Core(
        metrics=metrics,
        store=store,
        signer=TokenSigner(settings.secret, default_ttl_s=settings.token_ttl_s),
        redis=redis,
        redis_client=redis.client() if redis else None,
        limiter=limiter,
    )


# -- 2. the request middlewares -----------------------------------------------


def middleware_chain(settings: Settings, core: Core) -> list[Middleware]:
    """The REST middlewares, outermost first. Each has the shape described in
    server/http/middleware.py."""

    def principal_of(request: web.Request) -> tuple[str, str] | None:
        caller = bearer_principal(request, core.signer)
        return (caller.org, caller.user) if caller else None

    return [
        # First, so every later log line (and the access log) carries the request id.
        request_id_middleware(),
        # Preflights answered before metrics, auth and limits; errors and 429s get CORS headers.
        cors_middleware(settings.cors_origins),
        # Times what follows, compression included, with the final status.
        metrics_middleware(core.metrics),
        # Outside errors, so error bodies are compressed too.
        compression_middleware(ResponseCompression()),
        # Turns what follows (limits, auth, handlers) into JSON error bodies.
        error_middleware(),
        # Before auth, so floods without a valid token are limited per IP.
        rate_limit_middleware(core.limiter, principal_of=principal_of),
        # Last: the limiter may have verified the bearer token already.
        auth_middleware(core.signer),
    ]


# -- 3. the socket ------------------------------------------------------------


@dataclass(frozen=True)
class Realtime:
    """The Socket.IO server and what emits through it."""

    sio: SocketServer
    gate: EventGate
    emitter: Emitter
    feed: LeadChangeFeed


def build_realtime(settings: Settings, core: Core) -> Realtime:
    """The socket server, admitting connections within the limits, and the
    lead change feed (store commits -> `leads:changes`)."""
    limits = ConnectionLimits(
        events_per_s=settings.events_per_s,
        burst=settings.events_burst,
        connections_per_user=settings.connections_per_user,
        connections_per_ip=settings.connections_per_ip,
    )
    sio = create_socket_server(
        signer=core.signer,
        limits=limits,
        redis_url=settings.redis_url,
        client_ip=lambda request: client_ip(request, settings.rate_limits.trusted_proxy_hops),
        metrics=core.metrics,
        max_packet=settings.max_packet,
        cors_origins=socket_origins(settings.cors_origins),
        connect_timeout_s=settings.connect_timeout_s,
        websocket_deflate=settings.ws_compression,
    )
    gate = EventGate(
        limits, sio.get_session, limiter=core.limiter, metrics=core.metrics, on_expired=sio.expire
    )
    emitter = Emitter(sio, on_emit=core.metrics.event_out)
    feed = LeadChangeFeed(emitter)
    core.store.subscribe_changes(feed.on_commit)
    register_feed_events(sio, core.store, gate, page=settings.changes_page)
    return Realtime(sio=sio, gate=gate, emitter=emitter, feed=feed)


# -- 4. jobs ------------------------------------------------------------------


@dataclass(frozen=True)
class Jobs:
    """The job queue and the two kinds of job run on it."""

    queue: InProcessJobQueue | RedisJobQueue
    exports: ExportService
    imports: ImportService


def build_jobs(settings: Settings, core: Core, emitter: Emitter) -> Jobs:
    metrics = core.metrics
    queue = job_queue(settings, core.redis_client, on_depth=metrics.set_job_queue_depth)
    return Jobs(
        queue=queue,
        exports=export_service(
            settings, core.store, queue, emitter, on_failure=lambda: metrics.job_failed("export")
        ),
        imports=import_service(
            settings, core.store, queue, emitter, on_failure=lambda: metrics.job_failed("import")
        ),
    )


# -- 5. the agent -------------------------------------------------------------


@dataclass(frozen=True)
class Agent:
    """The model, the lead provider and the loop that drives them.

    :param tokens: counts prompt tokens for a real LLM; None for the offline planner.
    """

    model: ChatModel
    provider: LeadProvider
    tokens: TokenCounter | None
    loop: AgentLoop

    @property
    def model_label(self) -> str:
        """What /api/info and the widget call the model."""
        if isinstance(self.model, OfflinePlanner):
            return OFFLINE_PLANNER_LABEL
        return self.model.name


def build_agent(
    settings: Settings,
    core: Core,
    *,
    model: ChatModel | None,
    provider: Callable[[Store], LeadProvider] | None,
) -> Agent:
    chat_model = model or choose_model(settings)
    lead_provider = (
        provider(core.store) if provider is not None else choose_provider(settings, core.store)
    )
    tokens = None if isinstance(chat_model, OfflinePlanner) else TokenCounter()
    loop = AgentLoop(
        chat_model,
        max_steps=settings.agent_max_steps,
        observer=core.metrics,
        tokens=tokens,
        max_prompt_tokens=settings.max_prompt_tokens,
        prices=PriceTable.from_spec(settings.prices),
        budget=DailyBudget(
            max_usd=settings.daily_budget_usd,
            max_tokens=settings.daily_budget_tokens,
            reserve_tokens=settings.reply_reserve_tokens,
        ),
    )
    return Agent(model=chat_model, provider=lead_provider, tokens=tokens, loop=loop)


# -- 6. chat on the socket ----------------------------------------------------


@dataclass(frozen=True)
class Chat:
    """The chat service, and with Redis the relay that stops a reply running
    on another instance."""

    service: ChatService
    remote_stop: RemoteStop | None


def build_chat(
    settings: Settings, core: Core, realtime: Realtime, jobs: Jobs, agent: Agent
) -> Chat:
    service = ChatService(
        store=core.store,
        loop=agent.loop,
        provider=agent.provider,
        emitter=realtime.emitter,
        start_export=partial(start_export_for_agent, jobs.exports),
        max_text=settings.max_text,
        search_default=settings.search_default,
        search_max=settings.search_max,
        flush_s=settings.delta_flush_ms / 1000,
        flush_chars=settings.delta_flush_chars,
        replies_per_user=settings.replies_per_user,
        replies_per_org=settings.replies_per_org,
        daily_credits=settings.daily_credits,
    )
    register_chat_events(realtime.sio, service, realtime.gate)
    remote_stop = None
    if core.redis_client is not None:
        remote_stop = RemoteStop(core.redis_client, service.stop_here)
        service.use_remote_stop(remote_stop)
    return Chat(service=service, remote_stop=remote_stop)


async def start_export_for_agent(exports: ExportService, request: ExportRequest) -> str:
    """`ExportService.start` for the `export_leads` tool: a refused job (too many
    jobs, quota full) is a tool error the model can explain, not a failure."""
    try:
        return await exports.start(request)
    except JobRefused as exc:
        raise ToolError(exc.code, exc.message) from None


# -- 7. what routes use, and the routes ----------------------------------------


def share_on_app(
    app: web.Application,
    settings: Settings,
    core: Core,
    realtime: Realtime,
    jobs: Jobs,
    agent: Agent,
) -> None:
    """Put on the app what routes (and tests) find there by typed key (appkeys.py)."""
    page_cache: PageCache
    if core.redis_client is not None:
        page_cache = RedisPageCache(core.redis_client, ttl_s=settings.page_cache_ttl_s)
    else:
        page_cache = InProcessPageCache(
            max_bytes=settings.page_cache_bytes, ttl_s=settings.page_cache_ttl_s
        )
    app[PAGE_CACHE] = page_cache
    app[SETTINGS] = settings
    app[READINESS] = Readiness(
        core.store,
        redis=core.redis_client,
        model_url=(settings.openai_base_url or OPENAI_URL) if settings.openai_api_key else None,
    )
    app[STORE] = core.store
    app[SIGNER] = core.signer
    app[SIO] = realtime.sio
    app[EXPORTS] = jobs.exports
    app[IMPORTS] = jobs.imports
    app[METRICS] = core.metrics
    app[LABELS] = {"model": agent.model_label, "provider": agent.provider.name}


def add_routes(app: web.Application, metrics: Metrics) -> None:
    """The REST routes, `/metrics`, and the static files (the page at `/`,
    widget.js, `/static/...`)."""
    for module in REST_ROUTES:
        app.add_routes(module.routes)
    app.router.add_get("/metrics", metrics.handle_metrics)
    StaticAssets(STATIC).register(app)


# -- 8. start-up and shutdown ---------------------------------------------------


def build_lifecycle(
    settings: Settings, core: Core, realtime: Realtime, jobs: Jobs, agent: Agent, chat: Chat
) -> ServerLifecycle:
    """What start-up opens and shutdown closes (server/http/lifecycle.py)."""
    return ServerLifecycle(
        settings=settings,
        redis=core.redis,
        store=core.store,
        tokens=agent.tokens,
        model=agent.model,
        provider=agent.provider,
        sio=realtime.sio,
        feed=realtime.feed,
        queue=jobs.queue,
        chat=chat.service,
        remote_stop=chat.remote_stop,
        exports=jobs.exports,
        imports=jobs.imports,
        metrics=core.metrics,
    )
