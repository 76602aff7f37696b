"""Background jobs (exports, imports): a queue of job ids, and workers that
run the handler registered for each job's kind.

Job records (status, progress, result) live in the store, so
`GET /api/jobs/{id}` reads the same data whichever worker runs the job; the
queue only carries `(kind, job id, attempt)`.

Handlers follow one contract, the same on both queues: return normally when
the job is settled (done, or failed for a reason retrying cannot change);
raise to have it retried with exponential backoff, up to `max_attempts`;
after that the job goes to the dead letters and `on_dead` records why.

- `InProcessJobQueue` (embedded default): asyncio tasks with bounded
  concurrency. Not durable: a job running when the server stops is recorded
  as failed (`interrupted`).
- `RedisJobQueue` (`REDIS_URL`): a Redis Stream with a consumer group. We
  wrote it on redis-py rather than taking a library: taskiq's stream broker
  would do, but its result backends and middlewares duplicate our job
  records, and arq/saq pin older redis-py. The parts are small: `XADD` to
  submit; `XREADGROUP` to take; a heartbeat (`XCLAIM` of one's own entry)
  while a job runs; `XAUTOCLAIM` of entries idle past the visibility
  timeout, which is how a job of a killed worker is found and retried by
  another; a sorted set of delayed retries; a dead-letter stream.

What users see of a failure is a code and a plain message (`JobError`); the
exception behind it goes to the log, with its traceback, and to the dead
letters, never to `job.error`.

Each user has at most `jobs_per_user` jobs queued or running, counted from
the job records (`create_limited_job`), so the limit holds across servers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import ResponseError

from leadstream.server.redis_connections import REDIS_ERRORS
from leadstream.store.records import iso_from_epoch

if TYPE_CHECKING:
    from leadstream.server.redis_connections import RedisClient
    from leadstream.store.base import Store
    from leadstream.store.records import Job

log = logging.getLogger(__name__)

# A queued or running job not updated for this long belongs to a process that
# died (jobs update their record at least every batch): it no longer counts.
STALE_JOB_S = 3600
# What a user reads of a job that failed on an unexpected error (the error is logged).
FAILED_MESSAGE = "the job failed because of a server error; try again later"


class JobError(Exception):
    """A job refused or failed for a reason its user can act on.

    :param code: machine-readable (`too_many_jobs`, `export_quota_exceeded`, ...).
    :param message: plain words for the user; never an exception's text.
    :param details: extra fields of the REST error body.
    """

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


class JobRefused(JobError):
    """A job that was not created. REST routes answer it with `status`: 429
    `too_many_jobs` (the user's queued + running jobs are at the limit) or
    409 `export_quota_exceeded` (the org's export files fill their quota);
    the agent's `export_leads` tool reports it as a tool error."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(code, message, details)
        self.status = status


async def create_limited_job(
    store: Store,
    org: str,
    user: str,
    kind: str,
    params: dict[str, Any],
    *,
    limit: int,
    now: float | None = None,
) -> Job:
    """Create a queued job, unless the user has `limit` jobs queued or running.

    :raises JobRefused: `too_many_jobs`.
    """
    active_since = iso_from_epoch((time.time() if now is None else now) - STALE_JOB_S)
    job = await store.create_job_within_limit(
        org, user, kind, params, limit=limit, active_since=active_since
    )
    if job is None:
        raise JobRefused(
            429,
            "too_many_jobs",
            f"you already have {limit} exports or imports queued or running; "
            "start another when one of them has finished",
            {"limit": limit},
        )
    return job


def job_ref(job: Job) -> str:
    """What the queue carries for a job: `org:jobId` (org ids contain no ':')."""
    return f"{job.org}:{job.id}"


async def load_job(store: Store, ref: str) -> Job | None:
    """The job a queue message names, or None (logged) when the store has none."""
    org, _, job_id = ref.partition(":")
    job = await store.get_job(org, job_id)
    if job is None:
        log.warning("job %s is not in the store; dropped", ref)
    return job


Handler = Callable[[str], Awaitable[None]]
# (job id, code, message): the message is plain words for the user, no exception text.
DeadHandler = Callable[[str, str, str], Awaitable[None]]


class JobQueue(Protocol):
    """What services need of a queue (both queues below implement it)."""

    def register(self, kind: str, handler: Handler, on_dead: DeadHandler) -> None: ...

    async def submit(self, kind: str, job_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class JobKind:
    handler: Handler
    on_dead: DeadHandler


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed jobs are retried.

    :param max_attempts: runs in all, the first one included.
    :param base_delay_s: delay before the first retry; doubles each time.
    :param max_delay_s: the longest delay.
    """

    max_attempts: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before running attempt number `attempt + 1` (with jitter)."""
        capped = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return capped * random.uniform(0.5, 1.0)


class InProcessJobQueue:
    """Runs jobs as tasks of this process, at most `concurrency` at a time.

    :param on_depth: called with the number of queued + running jobs (metrics).
    """

    def __init__(
        self,
        *,
        concurrency: int,
        retry: RetryPolicy | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._retry = retry or RetryPolicy()
        self._kinds: dict[str, JobKind] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_depth = on_depth
        self.dead: list[tuple[str, str, str]] = []  # (kind, job id, reason)

    def register(self, kind: str, handler: Handler, on_dead: DeadHandler) -> None:
        self._kinds[kind] = JobKind(handler, on_dead)

    async def submit(self, kind: str, job_id: str) -> None:
        if kind not in self._kinds:
            raise ValueError(f"no handler for job kind {kind!r}")
        task = asyncio.create_task(self._run(kind, job_id), name=f"{kind}-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        self._report_depth()

    async def start(self) -> None:
        """Nothing to start: jobs run as they are submitted."""

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def depth(self) -> int:
        return len(self._tasks)

    async def _run(self, kind: str, job_id: str) -> None:
        job_kind = self._kinds[kind]
        for attempt in range(1, self._retry.max_attempts + 1):
            try:
                async with self._slots:
                    await job_kind.handler(job_id)
                return
            except asyncio.CancelledError:
                await job_kind.on_dead(job_id, "interrupted", "the server stopped during the job")
                raise
            except Exception as exc:
                log.exception("%s job %s failed (attempt %d)", kind, job_id, attempt)
                reason = f"{type(exc).__name__}: {exc}"
                if attempt == self._retry.max_attempts:
                    self.dead.append((kind, job_id, reason))
                    await job_kind.on_dead(job_id, "failed_after_retries", FAILED_MESSAGE)
                    return
                await asyncio.sleep(self._retry.delay(attempt))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._report_depth()

    def _report_depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(len(self._tasks))


class RedisJobQueue:
    """A durable job queue on a Redis Stream; every process that calls
    `start()` is a worker (servers, and `leadstream worker` processes).

    :param client: a redis-py asyncio client (owned by the caller).
    :param concurrency: jobs this worker runs at once.
    :param visibility_s: a job whose worker sends no heartbeat for this long
        is taken over by another worker (its worker is presumed dead).
    :param prefix: prefix of the Redis keys.
    """

    GROUP = "workers"

    def __init__(
        self,
        client: RedisClient,
        *,
        concurrency: int,
        retry: RetryPolicy | None = None,
        visibility_s: float = 30.0,
        prefix: str = "leadstream:jobs",
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self._client = client
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._retry = retry or RetryPolicy()
        self._visibility_ms = int(visibility_s * 1000)
        self._stream = prefix
        self._delayed = f"{prefix}:delayed"
        self.dead_stream = f"{prefix}:dead"
        self._consumer = f"worker-{secrets.token_hex(6)}"
        self._kinds: dict[str, JobKind] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._on_depth = on_depth

    def register(self, kind: str, handler: Handler, on_dead: DeadHandler) -> None:
        self._kinds[kind] = JobKind(handler, on_dead)

    async def submit(self, kind: str, job_id: str, *, attempt: int = 1) -> None:
        await self._client.xadd(self._stream, {"kind": kind, "job": job_id, "attempt": attempt})

    async def start_group(self) -> None:
        """Create the stream and consumer group if they are missing."""
        try:
            await self._client.xgroup_create(self._stream, self.GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def start(self) -> None:
        """Become a worker: take jobs, take over stuck ones, release delayed retries."""
        await self.start_group()
        for loop in (self._take, self._take_over_stuck, self._release_delayed):
            self._loops.append(asyncio.create_task(self._forever(loop), name=loop.__name__))

    async def close(self) -> None:
        """Stop. Running jobs are left pending: another worker takes them over."""
        tasks = self._loops + list(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def stats(self) -> dict[str, int]:
        """Queued, running (pending in the group), delayed and dead jobs."""
        queued = running = 0
        for group in await self._client.xinfo_groups(self._stream):
            if _text(group["name"]) == self.GROUP:
                queued = int(group.get("lag") or 0)
                running = int(group["pending"])
        return {
            "queued": queued,
            "running": running,
            "delayed": int(await self._client.zcard(self._delayed)),
            "dead": int(await self._client.xlen(self.dead_stream)),
        }

    # -- worker loops -----------------------------------------------------------

    async def _forever(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run a worker loop, surviving Redis outages with capped backoff."""
        delay = 0.5
        while True:
            try:
                await step()
                delay = 0.5
            except REDIS_ERRORS as exc:
                log.warning(
                    "job queue: %s failed (retrying in %.1fs): %s", step.__name__, delay, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _take(self) -> None:
        await self._slots.acquire()
        try:
            answer = await self._client.xreadgroup(
                self.GROUP, self._consumer, {self._stream: ">"}, count=1, block=1000
            )
        except BaseException:
            self._slots.release()
            raise
        entries = [entry for _, stream_entries in answer or () for entry in stream_entries]
        if not entries:
            self._slots.release()
            return
        entry_id, fields = entries[0]
        self._spawn(entry_id, fields)

    async def _take_over_stuck(self) -> None:
        await asyncio.sleep(self._visibility_ms / 2000)
        _, claimed, _ = await self._client.xautoclaim(
            self._stream, self.GROUP, self._consumer, self._visibility_ms, "0-0", count=10
        )
        for entry_id, fields in claimed:
            # Its worker stopped sending heartbeats: count it as a failed attempt.
            log.warning(
                "job queue: taking over %s job %s", _text(fields[b"kind"]), _text(fields[b"job"])
            )
            await self._retry_or_bury(entry_id, fields, "the worker running the job stopped")

    async def _release_delayed(self) -> None:
        await asyncio.sleep(0.5)
        due = await self._client.zrangebyscore(self._delayed, "-inf", time.time())
        for member in due:
            if await self._client.zrem(self._delayed, member):  # one worker wins each
                kind, job_id, attempt = _text(member).split("|")
                await self.submit(kind, job_id, attempt=int(attempt))
        if self._on_depth is not None:
            self._on_depth(sum((await self.stats()).values()))

    # -- running one job ----------------------------------------------------------

    def _spawn(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        task = asyncio.create_task(self._run(entry_id, fields))
        self._running.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            self._running.discard(task)
            self._slots.release()

        task.add_done_callback(finished)

    async def _run(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        kind, job_id = _text(fields[b"kind"]), _text(fields[b"job"])
        job_kind = self._kinds.get(kind)
        if job_kind is None:
            await self._bury(entry_id, fields, f"no handler for job kind {kind!r}")
            return
        heartbeat = asyncio.create_task(self._heartbeat(entry_id))
        try:
            await job_kind.handler(job_id)
        except asyncio.CancelledError:
            raise  # shutting down: the entry stays pending for another worker
        except Exception as exc:
            log.exception("%s job %s failed", kind, job_id)
            await self._retry_or_bury(entry_id, fields, f"{type(exc).__name__}: {exc}")
        else:
            await self._done(entry_id)
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, entry_id: bytes) -> None:
        while True:
            await asyncio.sleep(self._visibility_ms / 3000)
            try:
                await self._client.xclaim(
                    self._stream, self.GROUP, self._consumer, 0, [entry_id], justid=True
                )
            except REDIS_ERRORS as exc:
                log.warning("job queue heartbeat failed: %s", exc)

    async def _done(self, entry_id: bytes) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xack(self._stream, self.GROUP, entry_id)
            pipe.xdel(self._stream, entry_id)
            await pipe.execute()

    async def _retry_or_bury(
        self, entry_id: bytes, fields: dict[bytes, bytes], reason: str
    ) -> None:
        kind, job_id = _text(fields[b"kind"]), _text(fields[b"job"])
        attempt = int(fields.get(b"attempt", b"1"))
        if attempt >= self._retry.max_attempts:
            await self._bury(entry_id, fields, reason)
            job_kind = self._kinds.get(kind)
            if job_kind is not None:
                await job_kind.on_dead(job_id, "failed_after_retries", FAILED_MESSAGE)
            return
        due = time.time() + self._retry.delay(attempt)
        await self._client.zadd(self._delayed, {f"{kind}|{job_id}|{attempt + 1}": due})
        await self._done(entry_id)

    async def _bury(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> None:
        await self._client.xadd(self.dead_stream, {**fields, b"reason": reason, b"at": time.time()})
        await self._done(entry_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
