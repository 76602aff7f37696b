"""Background jobs (exports, imports): a queue of job ids, and workers that
run the handler registered for each job's kind.

Job records (status, progress, result) live in the store, so
`GET /api/jobs/{id}` reads the same data whichever worker runs the job; the
queue only carries `(kind, job id, attempt)`.

Handlers follow arq's contract, the same on both queues (`JobRunner` holds
it, once):

- return: the job is done;
- raise `JobFailed(code, message)`: the job fails for that reason, not retried;
- raise `Retry(defer_s)`: run it again in `defer_s` seconds (the retry
  policy's backoff when None);
- raise anything else: logged, and run again after the retry policy's backoff.

Every run counts as an attempt; after `retry.attempts` of them the job fails
`failed_after_retries` and goes to the dead letters. A failed job's
`on_failed` handler records it (job state, events) before the queue lets go
of it.

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

What users see of a failure is a code and a plain message (`JobFailed`); the
exception behind it goes to the log, with its traceback, and to the dead
letters, never to `job.error`.

Each user has at most `jobs_per_user` jobs queued or running, counted from
the job records (`create_limited_job`), so the limit holds across servers.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from redis.exceptions import ResponseError

from leadstream.errors import LeadstreamError
from leadstream.pacing import Backoff
from leadstream.server.redis_connections import REDIS_ERRORS
from leadstream.store.records import iso_from_epoch

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

    from leadstream.server.redis_connections import RedisClient
    from leadstream.store.base import Store
    from leadstream.store.records import Job

log = logging.getLogger(__name__)

# A queued or running job not updated for this long belongs to a process that
# died (jobs update their record at least every batch): it no longer counts.
STALE_JOB_S = 3600
# What a user reads of a job that failed on an unexpected error (the error is logged).
FAILED_MESSAGE = "the job failed because of a server error; try again later"
# Jobs run 3 times at most, 1 s then 2 s apart (with jitter), 60 s apart at most.
JOB_RETRY: Final = Backoff(attempts=3, base_delay_s=1.0, max_delay_s=60.0)
# A worker loop whose Redis calls fail tries again 0.5 s later, 30 s at most.
REDIS_OUTAGE: Final = Backoff(base_delay_s=0.5, max_delay_s=30.0)
# The Redis queue's depth (three Redis calls) is read this often for `on_depth`, not every tick.
DEPTH_EVERY_S = 5.0


class JobFailed(LeadstreamError):
    """Raised by a job handler: the job fails for a reason its user can act
    on, and retrying cannot change. It is not retried; `code`, `message` and
    `details` become the job's `error`.

    :param code: machine-readable (`export_quota_exceeded`, `unknown_search`, ...).
    :param message: plain words for the user; never an exception's text.
    :param details: extra fields of the job's error.
    """


class Retry(Exception):
    """Raised by a job handler: run the job again later (arq's `Retry`). It
    counts as an attempt: past the last one the job fails
    `failed_after_retries`.

    :param defer_s: seconds to wait before the next run; None: the retry
        policy's backoff.
    """

    def __init__(self, defer_s: float | None = None) -> None:
        if defer_s is not None and defer_s < 0:
            raise ValueError("defer_s must not be negative")
        super().__init__(defer_s)
        self.defer_s = defer_s

    def __repr__(self) -> str:
        return f"Retry(defer_s={self.defer_s})"

    __str__ = __repr__


class JobRefused(LeadstreamError):
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
# A stream entry as redis-py answers it: (id, {field: value}).
Entry = tuple[bytes, dict[bytes, bytes]]
# Records a job that failed for good (job state, events): (job id, why).
FailureHandler = Callable[[str, JobFailed], Awaitable[None]]


class JobQueue(Protocol):
    """What services need of a queue (both queues below implement it)."""

    def register(self, kind: str, handler: Handler, on_failed: FailureHandler) -> None: ...

    async def submit(self, kind: str, job_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class JobKind:
    handler: Handler
    on_failed: FailureHandler


@dataclass(frozen=True, slots=True)
class RunAgain:
    """The next attempt of the job is due in `delay_s` seconds."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class Settled:
    """The job is over: done (no `failure`), or failed and recorded as such.

    :param dead_reason: why it was given up after its last attempt (for the
        dead letters and the log); None when it did not use up its attempts.
    """

    failure: JobFailed | None = None
    dead_reason: str | None = None


class JobRunner:
    """Runs one attempt of a job and decides what comes of it: the contract
    both queues share (see the module docstring). The queues only carry jobs
    and wait out the delays.

    :param retry: how many attempts a job gets, and the backoff between them.
    """

    def __init__(self, retry: Backoff = JOB_RETRY) -> None:
        self.retry = retry
        self._kinds: dict[str, JobKind] = {}

    def register(self, kind: str, handler: Handler, on_failed: FailureHandler) -> None:
        self._kinds[kind] = JobKind(handler, on_failed)

    def knows(self, kind: str) -> bool:
        return kind in self._kinds

    async def run(self, kind: str, job_id: str, attempt: int) -> RunAgain | Settled:
        """Run attempt number `attempt` of a job of a registered `kind`."""
        job_kind = self._kinds[kind]
        try:
            await job_kind.handler(job_id)
        except Retry as exc:
            log.info("%s job %s asks to be retried (attempt %d): %r", kind, job_id, attempt, exc)
            return await self.after_failed_attempt(kind, job_id, attempt, repr(exc), exc.defer_s)
        except JobFailed as exc:
            await job_kind.on_failed(job_id, exc)
            return Settled(exc)
        except Exception as exc:
            log.exception("%s job %s failed (attempt %d)", kind, job_id, attempt)
            reason = f"{type(exc).__name__}: {exc}"
            return await self.after_failed_attempt(kind, job_id, attempt, reason)
        return Settled()

    async def after_failed_attempt(
        self, kind: str, job_id: str, attempt: int, reason: str, defer_s: float | None = None
    ) -> RunAgain | Settled:
        """Attempt `attempt` did not settle the job (it raised, asked for a
        retry, or its worker died): run it again in `defer_s` (the backoff's
        delay when None), or, after the last attempt, fail it
        `failed_after_retries`."""
        if attempt < self.retry.attempts:
            return RunAgain(self.retry.delay(attempt) if defer_s is None else defer_s)
        failure = JobFailed("failed_after_retries", FAILED_MESSAGE)
        await self.give_up(kind, job_id, failure)
        return Settled(failure, dead_reason=reason)

    async def give_up(self, kind: str, job_id: str, failure: JobFailed) -> None:
        """Record a job the queue gives up on (out of attempts, or stopped)."""
        job_kind = self._kinds.get(kind)
        if job_kind is not None:
            await job_kind.on_failed(job_id, failure)


class InProcessJobQueue:
    """Runs jobs as tasks of this process, at most `concurrency` at a time.

    :param retry: attempts per job and the backoff between them.
    :param on_depth: called with the number of queued + running jobs (metrics).
    """

    def __init__(
        self,
        *,
        concurrency: int,
        retry: Backoff = JOB_RETRY,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._runner = JobRunner(retry)
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_depth = on_depth
        self.dead: list[tuple[str, str, str]] = []  # (kind, job id, reason)

    def register(self, kind: str, handler: Handler, on_failed: FailureHandler) -> None:
        self._runner.register(kind, handler, on_failed)

    async def submit(self, kind: str, job_id: str) -> None:
        if not self._runner.knows(kind):
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
        attempt = 1
        try:
            while True:
                async with self._slots:
                    outcome = await self._runner.run(kind, job_id, attempt)
                if isinstance(outcome, Settled):
                    break
                await asyncio.sleep(outcome.delay_s)
                attempt += 1
        except asyncio.CancelledError:
            stopped = JobFailed("interrupted", "the server stopped during the job")
            await self._runner.give_up(kind, job_id, stopped)
            raise
        if outcome.dead_reason is not None:
            self.dead.append((kind, job_id, outcome.dead_reason))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._report_depth()
        if not task.cancelled() and task.exception() is not None:
            # Recording the failure itself failed (the store is down): the job
            # keeps its last state, and turns stale after STALE_JOB_S.
            log.error("job %s could not be settled", task.get_name(), exc_info=task.exception())

    def _report_depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(len(self._tasks))


class RedisJobQueue:
    """A durable job queue on a Redis Stream; every process that calls
    `start()` is a worker (servers, and `leadstream worker` processes).

    :param client: a redis-py asyncio client (owned by the caller).
    :param concurrency: jobs this worker runs at once.
    :param retry: attempts per job and the backoff between them.
    :param visibility_s: a job whose worker sends no heartbeat for this long
        is taken over by another worker (its worker is presumed dead).
    :param prefix: prefix of the Redis keys.
    :param on_depth: called every `DEPTH_EVERY_S` with `depth()` (metrics).
    """

    GROUP = "workers"

    def __init__(
        self,
        client: RedisClient,
        *,
        concurrency: int,
        retry: Backoff = JOB_RETRY,
        visibility_s: float = 30.0,
        prefix: str = "leadstream:jobs",
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self._client = client
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._runner = JobRunner(retry)
        self._visibility_ms = int(visibility_s * 1000)
        self._stream = prefix
        self._delayed = f"{prefix}:delayed"
        self.dead_stream = f"{prefix}:dead"
        self._consumer = f"worker-{secrets.token_hex(6)}"
        self._loops: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._on_depth = on_depth
        self._depth_due = 0.0  # monotonic time of the next `on_depth` report

    def register(self, kind: str, handler: Handler, on_failed: FailureHandler) -> None:
        self._runner.register(kind, handler, on_failed)

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
        """Queued, running (pending in the group), delayed and dead jobs. Three
        reads of three keys (one transaction cannot span a Redis Cluster's
        slots): a job that moves between them meanwhile may be missed."""
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

    async def depth(self) -> int:
        """Jobs queued, running or waiting for a retry; the dead letters are not waiting."""
        stats = await self.stats()
        return stats["queued"] + stats["running"] + stats["delayed"]

    async def dead_letters(self, count: int = 10) -> list[tuple[str, dict[str, str]]]:
        """The last `count` dead letters, newest first: (entry id, its fields:
        `kind`, `job`, `attempt`, `reason`, `at`)."""
        entries = cast("list[Entry]", await self._client.xrevrange(self.dead_stream, count=count))
        return [
            (_text(entry_id), {_text(name): _text(value) for name, value in fields.items()})
            for entry_id, fields in entries
        ]

    # -- worker loops -----------------------------------------------------------

    async def _forever(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run a worker loop, surviving Redis outages with capped backoff."""
        failures = 0
        while True:
            try:
                await step()
                failures = 0
            except REDIS_ERRORS as exc:
                failures += 1
                delay = REDIS_OUTAGE.delay(failures)
                log.warning(
                    "job queue: %s failed (retrying in %.1fs): %s", step.__name__, delay, exc
                )
                await asyncio.sleep(delay)

    async def _take(self) -> None:
        await self._slots.acquire()
        try:
            answer = cast(
                "list[tuple[bytes, list[Entry]]] | None",
                await self._client.xreadgroup(
                    self.GROUP, self._consumer, {self._stream: ">"}, count=1, block=1000
                ),
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
        _, claimed, _ = cast(
            "tuple[bytes, list[Entry], list[bytes]]",
            await self._client.xautoclaim(
                self._stream, self.GROUP, self._consumer, self._visibility_ms, "0-0", count=10
            ),
        )
        for entry_id, fields in claimed:
            # Its worker stopped sending heartbeats: count it as a failed attempt.
            kind, job_id = _text(fields[b"kind"]), _text(fields[b"job"])
            log.warning("job queue: taking over %s job %s", kind, job_id)
            outcome = await self._runner.after_failed_attempt(
                kind, job_id, _attempt(fields), "the worker running the job stopped"
            )
            await self._settle(entry_id, fields, outcome)

    async def _release_delayed(self) -> None:
        await asyncio.sleep(0.5)
        due = cast(
            "list[bytes]", await self._client.zrangebyscore(self._delayed, "-inf", time.time())
        )
        for member in due:
            if await self._client.zrem(self._delayed, member):  # one worker wins each
                kind, job_id, attempt = _text(member).split("|")
                await self.submit(kind, job_id, attempt=int(attempt))
        if self._on_depth is not None and time.monotonic() >= self._depth_due:
            self._depth_due = time.monotonic() + DEPTH_EVERY_S
            self._on_depth(await self.depth())

    # -- running one job ----------------------------------------------------------

    def _spawn(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        task = asyncio.create_task(self._run(entry_id, fields))
        self._running.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            self._running.discard(task)
            self._slots.release()
            if not task.cancelled() and task.exception() is not None:
                # Settling failed (the store or Redis is down): the entry stays
                # pending, and another worker takes it over as a failed attempt.
                log.error("job entry %r could not be settled", entry_id, exc_info=task.exception())

        task.add_done_callback(finished)

    async def _run(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        kind, job_id = _text(fields[b"kind"]), _text(fields[b"job"])
        if not self._runner.knows(kind):
            await self._bury(entry_id, fields, f"no handler for job kind {kind!r}")
            return
        # Cancelled (shutting down): the entry stays pending for another worker.
        heartbeat = asyncio.create_task(self._heartbeat(entry_id))
        try:
            outcome = await self._runner.run(kind, job_id, _attempt(fields))
            await self._settle(entry_id, fields, outcome)
        finally:
            heartbeat.cancel()

    async def _settle(
        self, entry_id: bytes, fields: dict[bytes, bytes], outcome: RunAgain | Settled
    ) -> None:
        """Let go of the entry: to the delayed retries, the dead letters, or gone."""
        if isinstance(outcome, RunAgain):
            kind, job_id = _text(fields[b"kind"]), _text(fields[b"job"])
            member = f"{kind}|{job_id}|{_attempt(fields) + 1}"
            await self._client.zadd(self._delayed, {member: time.time() + outcome.delay_s})
            await self._done(entry_id)
        elif outcome.dead_reason is not None:
            await self._bury(entry_id, fields, outcome.dead_reason)
        else:
            await self._done(entry_id)

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

    async def _bury(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> None:
        dead: dict[FieldT, EncodableT] = {name: value for name, value in fields.items()}
        dead.update({b"reason": reason, b"at": time.time()})
        await self._client.xadd(self.dead_stream, dead)
        await self._done(entry_id)


def _attempt(fields: dict[bytes, bytes]) -> int:
    return int(fields.get(b"attempt", b"1"))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
