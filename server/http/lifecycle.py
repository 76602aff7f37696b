"""Start-up and shutdown of the server: `ServerLifecycle`, the app's `cleanup_ctx`.

Every resource is registered on one `AsyncExitStack` as soon as it is opened
(right before, for one that may be left half open), so whatever fails at
start-up, what was opened before it is closed, and shutdown closes
everything in the reverse order of opening.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass

from aiohttp import web

from leadstream.agent.model import ChatModel
from leadstream.agent.openai_model import OpenAIChatModel
from leadstream.agent.providers.base import LeadProvider
from leadstream.agent.tokens import TokenCounter
from leadstream.realtime.chat import ChatService
from leadstream.realtime.feed import LeadChangeFeed
from leadstream.realtime.remote_stop import RemoteStop
from leadstream.realtime.server import SocketServer
from leadstream.server.config import Settings
from leadstream.server.gc_tuning import GCTuning
from leadstream.server.jobs.exports import ExportService
from leadstream.server.jobs.imports import ImportService
from leadstream.server.jobs.queue import InProcessJobQueue, RedisJobQueue
from leadstream.server.metrics import Metrics
from leadstream.server.redis_connections import RedisConnections
from leadstream.server.seeding import seed_directory
from leadstream.store.base import Store
from leadstream.store.records import iso_from_epoch

log = logging.getLogger(__name__)
MAINTENANCE_EVERY_S = 300
# No reply runs this long (steps x model timeout); one still streaming is orphaned.
REPLY_MAX_S = 20 * 60
# An upload no import job took after this long was abandoned (its server stopped).
STALE_UPLOAD_S = 24 * 3600


@dataclass(frozen=True, kw_only=True)
class ServerLifecycle:
    """Opens the server's resources at start-up, in this order, and closes
    them at shutdown in the reverse one; `run` is the `cleanup_ctx` entry.

    :param redis: the app's Redis connections [none without `REDIS_URL`].
    :param store: opened, and seeded with the people directory when
        `LEADSTREAM_PEOPLE` asks for it.
    :param tokens: the prompt token counter, whose vocabulary is built first
        [none for the offline planner].
    :param model: its HTTP client is closed (an OpenAI-compatible model).
    :param provider: entered when it is an async context manager (an HTTP session).
    :param sio: its timers and Redis subscriber are stopped.
    :param feed: emits store commits while the server runs.
    :param queue: runs jobs here (the in-process queue always; the Redis one
        unless `LEADSTREAM_SERVE_WORKERS=0`).
    :param chat: its running replies are stopped (and stored as such).
    :param remote_stop: listens for stops of replies running here [none without Redis].
    :param exports, imports: their expired files are removed every few minutes.
    :param metrics: times garbage collections once start-up is done.
    """

    settings: Settings
    redis: RedisConnections | None
    store: Store
    tokens: TokenCounter | None
    model: ChatModel
    provider: LeadProvider
    sio: SocketServer
    feed: LeadChangeFeed
    queue: InProcessJobQueue | RedisJobQueue
    chat: ChatService
    remote_stop: RemoteStop | None
    exports: ExportService
    imports: ImportService
    metrics: Metrics

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await self.open(stack)
            yield

    async def open(self, stack: AsyncExitStack) -> None:
        """Open everything, registering each closer on `stack`."""
        if self.redis is not None:
            # Its clients connect on first use, from here on.
            stack.push_async_callback(self.redis.aclose)
        await self._warm_tokenizer()
        await self._open_store(stack)
        await self._open_agent_clients(stack)
        self._start_socket(stack)
        await self._start_jobs(stack)
        self._start_chat(stack)
        self._start_maintenance(stack)
        if self.settings.auth_mode == "dev":
            log.warning(
                "DEV AUTH MODE: anyone can get a token from POST /api/dev/token; "
                "never expose this server"
            )
        self._tune_gc(stack)

    async def _warm_tokenizer(self) -> None:
        """Building the vocabulary holds the GIL for ~0.5 s even in a thread:
        done before the first connection, not during someone's first reply."""
        if self.tokens is not None:
            await asyncio.to_thread(self.tokens.for_model, self.model.name)

    async def _open_store(self, stack: AsyncExitStack) -> None:
        stack.push_async_callback(self.store.close)  # also after a half-done open
        await self.store.open()
        if self.settings.people:
            await seed_directory(self.store, self.settings.people, seed=self.settings.people_seed)

    async def _open_agent_clients(self, stack: AsyncExitStack) -> None:
        """The HTTP sessions of the lead provider and of the model, if they have any."""
        if isinstance(self.provider, AbstractAsyncContextManager):
            await stack.enter_async_context(self.provider)
        if isinstance(self.model, OpenAIChatModel):
            stack.push_async_callback(self.model.aclose)

    def _start_socket(self, stack: AsyncExitStack) -> None:
        # python-socketio starts the manager's Redis subscriber on the first request.
        stack.callback(self.sio.stop_timers)
        stack.push_async_callback(self.sio.manager.close)
        self.feed.start()
        stack.push_async_callback(self.feed.stop)
        # First at shutdown: sockets whose connections aiohttp no longer knows.
        stack.push_async_callback(self.sio.eio.close_websockets)

    async def _start_jobs(self, stack: AsyncExitStack) -> None:
        stack.push_async_callback(self.queue.close)
        if self.settings.serve_workers or not isinstance(self.queue, RedisJobQueue):
            await self.queue.start()

    def _start_chat(self, stack: AsyncExitStack) -> None:
        stack.push_async_callback(self.chat.close)
        if self.remote_stop is not None:
            self.remote_stop.start()
            stack.push_async_callback(self.remote_stop.close)

    def _start_maintenance(self, stack: AsyncExitStack) -> None:
        task = asyncio.create_task(
            maintain(self.store, self.exports, self.imports), name="maintenance"
        )
        stack.push_async_callback(_cancel, task)

    def _tune_gc(self, stack: AsyncExitStack) -> None:
        """Start-up is done: freeze what it allocated, time every collection from now on."""
        collector = GCTuning(self.settings.gc_thresholds, freeze=self.settings.gc_freeze)
        collector.apply()
        stack.callback(collector.restore)
        gc_pauses = self.metrics.watch_gc(log_over_s=self.settings.gc_log_ms / 1000)
        stack.callback(gc_pauses.close)


async def maintain(store: Store, exports: ExportService, imports: ImportService) -> None:
    """Every few minutes: prune the change log past its retention window,
    delete export files whose links expired and uploads no import job took,
    and mark replies that have been streaming for longer than any reply can
    (their process died) interrupted."""
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


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
