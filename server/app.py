"""The application factory: `create_app(settings) -> web.Application`.

Everything the server holds (store, Socket.IO server, feed, agent, jobs) is
built here from one `Settings` object and opened/closed in `cleanup_ctx`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import suppress

import redis.asyncio as aioredis
from aiohttp import web

from leadstream.agent.loop import AgentLoop
from leadstream.agent.model import ChatModel
from leadstream.agent.planner import OFFLINE_PLANNER_LABEL, OfflinePlanner
from leadstream.agent.providers.base import LeadProvider
from leadstream.agent.providers.local_directory import LocalDirectoryProvider
from leadstream.realtime.chat import ChatService, register_chat_events
from leadstream.realtime.emitter import Emitter
from leadstream.realtime.feed import LeadChangeFeed, register_feed_events
from leadstream.realtime.limits import ConnectionLimits
from leadstream.realtime.remote_stop import RemoteStop
from leadstream.realtime.server import create_socket_server
from leadstream.server.api import conversations, dev, exports, info, leads
from leadstream.server.api.info import STATIC
from leadstream.server.appkeys import EXPORTS, LABELS, PAGE_CACHE, SETTINGS, SIGNER, SIO, STORE
from leadstream.server.auth import TokenSigner
from leadstream.server.config import Settings
from leadstream.server.exports import DownloadSigner, ExportService
from leadstream.server.jobs import JobRunner
from leadstream.server.middleware import auth_middleware, error_middleware
from leadstream.server.page_cache import InProcessPageCache, RedisPageCache
from leadstream.server.seeding import seed_directory
from leadstream.store import backends
from leadstream.store.base import Store

log = logging.getLogger(__name__)
MAINTENANCE_EVERY_S = 3600


def open_store(settings: Settings) -> Store:
    return backends.open_store(
        settings.store_url,
        changes_retention_s=settings.changes_retention_s,
        search_ttl_s=settings.search_ttl_s,
    )


def create_app(
    settings: Settings,
    *,
    model: ChatModel | None = None,
    provider: Callable[[Store], LeadProvider] | None = None,
) -> web.Application:
    """Build the server. `settings.secret` must be set (see `Settings.with_secret`).

    :param model: the chat model [the offline planner].
    :param provider: makes the lead provider from the store [the local people directory].
    """
    if settings.openai_api_key or settings.rocketreach_api_key:
        log.warning(
            "OPENAI_API_KEY / ROCKETREACH_API_KEY are set, but this version answers with the "
            "offline planner and the local directory only"
        )
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=settings.max_upload
    )
    store = open_store(settings)
    signer = TokenSigner(settings.secret, default_ttl_s=settings.token_ttl_s)
    limits = ConnectionLimits(
        events_per_s=settings.events_per_s,
        burst=settings.events_burst,
        connections_per_user=settings.connections_per_user,
    )
    sio = create_socket_server(
        signer=signer,
        limits=limits,
        redis_url=settings.redis_url,
        max_packet=settings.max_packet,
        cors_origins=settings.cors_origins,
    )
    sio.attach(app)
    emitter = Emitter(sio)
    feed = LeadChangeFeed(emitter)
    store.subscribe_changes(feed.on_commit)
    runner = JobRunner(concurrency=settings.job_concurrency)
    export_service = ExportService(
        store=store,
        runner=runner,
        emitter=emitter,
        signer=DownloadSigner(settings.secret, ttl_s=settings.export_url_ttl_s),
        folder=settings.data_dir / "exports",
    )
    if model is None:
        model = OfflinePlanner(search_max=settings.search_max)
    if provider is None:
        lead_provider: LeadProvider = LocalDirectoryProvider(
            store, chunk_size=settings.search_batch_size
        )
    else:
        lead_provider = provider(store)
    chat = ChatService(
        store=store,
        loop=AgentLoop(model, max_steps=settings.agent_max_steps),
        provider=lead_provider,
        emitter=emitter,
        start_export=export_service.start,
        max_text=settings.max_text,
        search_default=settings.search_default,
        search_max=settings.search_max,
        flush_s=settings.delta_flush_ms / 1000,
        flush_chars=settings.delta_flush_chars,
    )
    register_chat_events(sio, chat, limits)
    register_feed_events(sio, store, limits, page=settings.changes_page)

    redis_client = aioredis.Redis.from_url(settings.redis_url) if settings.redis_url else None
    remote_stop = None
    if redis_client is not None:
        remote_stop = RemoteStop(redis_client, chat.stop_here)
        chat.use_remote_stop(remote_stop)
    app[PAGE_CACHE] = (
        RedisPageCache(redis_client) if redis_client is not None else InProcessPageCache()
    )
    app[SETTINGS] = settings
    app[STORE] = store
    app[SIGNER] = signer
    app[SIO] = sio
    app[EXPORTS] = export_service
    model_label = OFFLINE_PLANNER_LABEL if isinstance(model, OfflinePlanner) else model.name
    app[LABELS] = {"model": model_label, "provider": lead_provider.name}
    for module in (info, dev, leads, exports, conversations):
        app.add_routes(module.routes)
    app.router.add_static("/static", str(STATIC))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        if settings.people:
            await seed_directory(store, settings.people, seed=settings.people_seed)
        feed.start()
        if remote_stop is not None:
            remote_stop.start()
        maintenance = asyncio.create_task(_maintain(store), name="store-maintenance")
        if settings.auth_mode == "dev":
            log.warning(
                "DEV AUTH MODE: anyone can get a token from POST /api/dev/token; "
                "never expose this server"
            )
        yield
        maintenance.cancel()
        with suppress(asyncio.CancelledError):
            await maintenance
        if remote_stop is not None:
            await remote_stop.close()
        await chat.close()
        await runner.close()
        await feed.stop()
        await store.close()
        if redis_client is not None:
            await redis_client.aclose()

    app.cleanup_ctx.append(lifecycle)
    return app


async def _maintain(store: Store) -> None:
    """Prune the change log past its retention window, hourly."""
    while True:
        try:
            pruned = await store.prune_changes()
            if pruned:
                log.info("pruned %d change-log entries", pruned)
        except Exception:
            log.exception("change-log pruning failed; will retry")
        await asyncio.sleep(MAINTENANCE_EVERY_S)
