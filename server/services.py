"""The services the settings choose, built the same way by `leadstream serve`
(`server/http/app.py`) and `leadstream worker` (`server/jobs/worker.py`):
the store, the chat model, the lead provider, the job queue and the export
and import services that run on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from leadstream.agent.model import ChatModel
from leadstream.agent.openai_model import OpenAIChatModel
from leadstream.agent.planner import OfflinePlanner
from leadstream.agent.providers.base import LeadProvider
from leadstream.agent.providers.local_directory import LocalDirectoryProvider
from leadstream.agent.providers.rocketreach import RocketReachProvider
from leadstream.realtime.emitter import Emitter
from leadstream.server.config import Settings
from leadstream.server.jobs.exports import DownloadSigner, ExportService
from leadstream.server.jobs.imports import ImportService
from leadstream.server.jobs.queue import JOB_RETRY, InProcessJobQueue, JobQueue, RedisJobQueue
from leadstream.server.redis_connections import RedisClient
from leadstream.store import backends
from leadstream.store.base import Store
from leadstream.store.lead_search import QueryBounds
from leadstream.store.timing import OnCall


def open_store(settings: Settings, *, on_call: OnCall | None = None) -> Store:
    """The store `LEADSTREAM_STORE` names, each call timed to `on_call`."""
    return backends.open_store(
        settings.store_url,
        changes_retention_s=settings.changes_retention_s,
        search_ttl_s=settings.search_ttl_s,
        query_bounds=QueryBounds(
            max_terms=settings.query_max_terms,
            min_prefix=settings.query_min_prefix,
            time_ms=settings.query_time_ms,
        ),
        search_rows_quota=settings.search_rows_quota,
        on_call=on_call,
    )


def choose_model(settings: Settings) -> ChatModel:
    """An OpenAI-compatible model when `OPENAI_API_KEY` is set, else the offline planner."""
    if settings.openai_api_key:
        return OpenAIChatModel(
            api_key=settings.openai_api_key, base_url=settings.openai_base_url, model=settings.model
        )
    return OfflinePlanner(
        search_max=settings.search_max,
        search_default=settings.search_default,
        max_chars=settings.planner_max_chars,
    )


def choose_provider(settings: Settings, store: Store) -> LeadProvider:
    """RocketReach when `ROCKETREACH_API_KEY` is set, else the local people directory."""
    if settings.rocketreach_api_key:
        return RocketReachProvider(
            settings.rocketreach_api_key,
            base_url=settings.rocketreach_base_url,
            search_path=settings.rocketreach_search_path,
            requests_per_s=settings.rocketreach_requests_per_s,
            max_concurrency=settings.rocketreach_concurrency,
        )
    return LocalDirectoryProvider(store, chunk_size=settings.search_batch_size)


def job_queue(
    settings: Settings,
    redis_client: RedisClient | None,
    *,
    on_depth: Callable[[int], None] | None = None,
) -> InProcessJobQueue | RedisJobQueue:
    """The durable Redis queue with `REDIS_URL`, else the in-process one."""
    retry = replace(JOB_RETRY, attempts=settings.job_max_attempts)
    if redis_client is not None:
        return RedisJobQueue(
            redis_client,
            concurrency=settings.job_concurrency,
            retry=retry,
            visibility_s=settings.job_visibility_s,
            on_depth=on_depth,
        )
    return InProcessJobQueue(concurrency=settings.job_concurrency, retry=retry, on_depth=on_depth)


def export_service(
    settings: Settings,
    store: Store,
    queue: JobQueue,
    emitter: Emitter,
    *,
    on_failure: Callable[[], None] | None = None,
) -> ExportService:
    """The export jobs, registered on `queue`."""
    return ExportService(
        store=store,
        queue=queue,
        page_size=settings.export_page,
        emitter=emitter,
        signer=DownloadSigner(settings.secret, ttl_s=settings.export_url_ttl_s),
        folder=settings.data_dir / "exports",
        jobs_per_user=settings.jobs_per_user,
        quota_bytes=settings.export_quota_bytes,
        on_failure=on_failure,
    )


def import_service(
    settings: Settings,
    store: Store,
    queue: JobQueue,
    emitter: Emitter,
    *,
    on_failure: Callable[[], None] | None = None,
) -> ImportService:
    """The import jobs, registered on `queue`."""
    return ImportService(
        store=store,
        queue=queue,
        emitter=emitter,
        folder=settings.data_dir / "imports",
        progress_interval_s=settings.import_progress_ms / 1000,
        max_line=settings.csv_max_line,
        jobs_per_user=settings.jobs_per_user,
        on_failure=on_failure,
    )
