"""The application factory: `create_app(settings) -> web.Application`.

Everything the server holds (store, Socket.IO server, feed, agent, jobs) is
built here from one `Settings` object and opened/closed in `cleanup_ctx`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, suppress
from functools import partial

from aiohttp import web

from leadstream.agent.budget import DailyBudget
from leadstream.agent.loop import AgentLoop
from leadstream.agent.model import ChatModel
from leadstream.agent.openai_model import OpenAIChatModel
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
from leadstream.realtime.server import create_socket_server
from leadstream.server.auth import TokenSigner
from leadstream.server.config import Settings
from leadstream.server.gc_tuning import GCTuning
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
from leadstream.server.http.compression import ResponseCompression
from leadstream.server.http.cors import cors_middleware, socket_origins
from leadstream.server.http.middleware import auth_middleware, bearer_principal, error_middleware
from leadstream.server.http.page_cache import InProcessPageCache, RedisPageCache
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
from leadstream.server.jobs.exports import DownloadSigner, ExportService
from leadstream.server.jobs.imports import ImportService
from leadstream.server.jobs.queue import JobRefused, RedisJobQueue
from leadstream.server.logs import request_id_middleware
from leadstream.server.metrics import Metrics
from leadstream.server.ratelimit import RateLimiter, client_ip, rate_limit_middleware
from leadstream.server.redis_connections import RATE_LIMITS, RedisConnections
from leadstream.server.seeding import seed_directory
from leadstream.server.services import choose_model, choose_provider, job_queue, open_store
from leadstream.store.base import Store
from leadstream.store.records import iso_from_epoch

log = logging.getLogger(__name__)
MAINTENANCE_EVERY_S = 300
# The OpenAI SDK's default endpoint, checked by /readyz when no OPENAI_BASE_URL is set.
OPENAI_URL = "https://api.openai.com/v1"
# No reply runs this long (steps x model timeout); one still streaming is orphaned.
REPLY_MAX_S = 20 * 60
# An upload no import job took after this long was abandoned (its server stopped).
STALE_UPLOAD_S = 24 * 3600


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
    metrics = Metrics(slow_store_call_s=settings.slow_query_ms / 1000)
    store = open_store(settings)
    store.on_call = metrics.store_call_finished
    signer = TokenSigner(settings.secret, default_ttl_s=settings.token_ttl_s)
    connections = RedisConnections(settings.redis_url) if settings.redis_url else None
    redis_client = connections.client() if connections else None
    rate_redis = connections.client(RATE_LIMITS) if connections else None
    limiter = RateLimiter.from_settings(
        settings.rate_limits,
        redis=rate_redis,
        tier_of=lambda org: settings.org_tiers.get(org, settings.rate_limits.default_tier),
        on_reject=metrics.rate_limited,
        on_backend_failure=metrics.rate_limit_backend_failed,
        on_fail_open=metrics.rate_limit_allowed_unchecked,
    )

    def principal_of(request: web.Request) -> tuple[str, str] | None:
        caller = bearer_principal(request, signer)
        return (caller.org, caller.user) if caller else None

    app = web.Application(
        middlewares=[
            request_id_middleware,
            cors_middleware(settings.cors_origins),
            metrics.middleware,
            # The Socket.IO websocket negotiates deflate itself (LEADSTREAM_WS_COMPRESSION,
            # realtime/websocket.py), so this one need not copy each upgrade request.
            ResponseCompression(websocket_deflate=True).middleware,
            error_middleware,
            rate_limit_middleware(limiter, principal_of=principal_of),
            auth_middleware,
        ],
        # JSON bodies; the CSV import streams its body under its own larger limit.
        client_max_size=settings.max_json,
    )
    limits = ConnectionLimits(
        events_per_s=settings.events_per_s,
        burst=settings.events_burst,
        connections_per_user=settings.connections_per_user,
        connections_per_ip=settings.connections_per_ip,
    )
    sio = create_socket_server(
        signer=signer,
        limits=limits,
        redis_url=settings.redis_url,
        client_ip=lambda request: client_ip(request, settings.rate_limits.trusted_proxy_hops),
        metrics=metrics,
        max_packet=settings.max_packet,
        cors_origins=socket_origins(settings.cors_origins),
        connect_timeout_s=settings.connect_timeout_s,
        websocket_deflate=settings.ws_compression,
    )
    sio.attach(app)
    gate = EventGate(
        limits, sio.get_session, limiter=limiter, metrics=metrics, on_expired=sio.expire
    )
    emitter = Emitter(sio, on_emit=metrics.event_out)
    feed = LeadChangeFeed(emitter)
    store.subscribe_changes(feed.on_commit)
    queue = job_queue(settings, redis_client, on_depth=metrics.set_job_queue_depth)
    export_service = ExportService(
        store=store,
        queue=queue,
        page_size=settings.export_page,
        emitter=emitter,
        signer=DownloadSigner(settings.secret, ttl_s=settings.export_url_ttl_s),
        folder=settings.data_dir / "exports",
        jobs_per_user=settings.jobs_per_user,
        quota_bytes=settings.export_quota_bytes,
        on_failure=lambda: metrics.job_failed("export"),
    )
    import_service = ImportService(
        store=store,
        queue=queue,
        emitter=emitter,
        folder=settings.data_dir / "imports",
        progress_interval_s=settings.import_progress_ms / 1000,
        max_line=settings.csv_max_line,
        jobs_per_user=settings.jobs_per_user,
        on_failure=lambda: metrics.job_failed("import"),
    )
    chat_model = model or choose_model(settings)
    lead_provider = provider(store) if provider is not None else choose_provider(settings, store)
    is_llm = not isinstance(chat_model, OfflinePlanner)
    token_counter = TokenCounter() if is_llm else None
    agent_loop = AgentLoop(
        chat_model,
        max_steps=settings.agent_max_steps,
        observer=metrics,
        tokens=token_counter,
        max_prompt_tokens=settings.max_prompt_tokens,
        prices=PriceTable.from_spec(settings.prices),
        budget=DailyBudget(
            max_usd=settings.daily_budget_usd,
            max_tokens=settings.daily_budget_tokens,
            reserve_tokens=settings.reply_reserve_tokens,
        ),
    )
    chat = ChatService(
        store=store,
        loop=agent_loop,
        provider=lead_provider,
        emitter=emitter,
        start_export=partial(start_export_for_agent, export_service),
        max_text=settings.max_text,
        search_default=settings.search_default,
        search_max=settings.search_max,
        flush_s=settings.delta_flush_ms / 1000,
        flush_chars=settings.delta_flush_chars,
        replies_per_user=settings.replies_per_user,
        replies_per_org=settings.replies_per_org,
        daily_credits=settings.daily_credits,
    )
    register_chat_events(sio, chat, gate)
    register_feed_events(sio, store, gate, page=settings.changes_page)
    remote_stop = None
    if redis_client is not None:
        remote_stop = RemoteStop(redis_client, chat.stop_here)
        chat.use_remote_stop(remote_stop)

    app[PAGE_CACHE] = (
        RedisPageCache(redis_client, ttl_s=settings.page_cache_ttl_s)
        if redis_client is not None
        else InProcessPageCache(
            max_bytes=settings.page_cache_bytes, ttl_s=settings.page_cache_ttl_s
        )
    )
    app[SETTINGS] = settings
    app[READINESS] = Readiness(
        store,
        redis=redis_client,
        model_url=(settings.openai_base_url or OPENAI_URL) if settings.openai_api_key else None,
    )
    app[STORE] = store
    app[SIGNER] = signer
    app[SIO] = sio
    app[EXPORTS] = export_service
    app[IMPORTS] = import_service
    app[METRICS] = metrics
    model_label = (
        OFFLINE_PLANNER_LABEL if isinstance(chat_model, OfflinePlanner) else chat_model.name
    )
    app[LABELS] = {"model": model_label, "provider": lead_provider.name}
    for module in (info, dev, leads, exports, imports, conversations, usage, openapi):
        app.add_routes(module.routes)
    app.router.add_get("/metrics", metrics.handle_metrics)
    StaticAssets(STATIC).register(app)  # the page at /, widget.js, /static/...

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if token_counter is not None:
            # Building the vocabulary holds the GIL for ~0.5 s even in a thread:
            # done before the first connection, not during someone's first reply.
            await asyncio.to_thread(token_counter.for_model, chat_model.name)
        await store.open()
        if settings.people:
            await seed_directory(store, settings.people, seed=settings.people_seed)
        async with AsyncExitStack() as resources:
            if isinstance(lead_provider, AbstractAsyncContextManager):  # an HTTP session
                await resources.enter_async_context(lead_provider)
            if isinstance(chat_model, OpenAIChatModel):
                resources.push_async_callback(chat_model.aclose)
            feed.start()
            if settings.serve_workers or not isinstance(queue, RedisJobQueue):
                await queue.start()
            if remote_stop is not None:
                remote_stop.start()
            maintenance = asyncio.create_task(
                _maintain(store, export_service, import_service), name="maintenance"
            )
            if settings.auth_mode == "dev":
                log.warning(
                    "DEV AUTH MODE: anyone can get a token from POST /api/dev/token; "
                    "never expose this server"
                )
            # Start-up is done: freeze what it allocated, time every collection from now on.
            collector = GCTuning(settings.gc_thresholds, freeze=settings.gc_freeze)
            collector.apply()
            gc_pauses = metrics.watch_gc(log_over_s=settings.gc_log_ms / 1000)
            yield
            gc_pauses.close()
            collector.restore()
            maintenance.cancel()
            with suppress(asyncio.CancelledError):
                await maintenance
            if remote_stop is not None:
                await remote_stop.close()
            await chat.close()
            await queue.close()
            await feed.stop()
            await sio.manager.close()  # its Redis subscriber, if any
            sio.stop_timers()
        await store.close()
        if connections is not None:
            await connections.aclose()

    app.cleanup_ctx.append(lifecycle)
    return app


async def start_export_for_agent(exports: ExportService, request: ExportRequest) -> str:
    """`ExportService.start` for the `export_leads` tool: a refused job (too many
    jobs, quota full) is a tool error the model can explain, not a failure."""
    try:
        return await exports.start(request)
    except JobRefused as exc:
        raise ToolError(exc.code, exc.message) from None


async def _maintain(store: Store, exports: ExportService, imports: ImportService) -> None:
    """Every few minutes: prune the change log past its retention window,
    delete export files whose links expired and uploads no import job took,
    and mark replies that have been
    streaming for longer than any reply can (their process died) interrupted."""
    while True:
        try:
            stale = iso_from_epoch(time.time() - REPLY_MAX_S)
            interrupted = await store.interrupt_stale_replies(started_before=stale)
            if interrupted:
                log.warning("marked %d replies of stopped processes interrupted", interrupted)
            pruned = await store.prune_changes()
            if pruned:
                log.info("pruned %d change-log entries", pruned)
            removed = await asyncio.to_thread(exports.remove_expired_files)
            if removed:
                log.info("removed %d expired export files", removed)
            abandoned = await asyncio.to_thread(
                imports.remove_stale_uploads, older_than_s=STALE_UPLOAD_S
            )
            if abandoned:
                log.info("removed %d abandoned uploads", abandoned)
        except Exception:
            log.exception("maintenance failed; will retry")
        await asyncio.sleep(MAINTENANCE_EVERY_S)
