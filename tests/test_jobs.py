"""Background jobs: retries and dead letters on a real redis-server, a worker
process killed in the middle of an export, and exports whose memory does not
grow with their size."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import secrets
import signal
import time
import tracemalloc

import aiohttp
import pytest
import redis.asyncio as aioredis
from mongo_standin import MongoStandin, standin_python
from support import ServerProcess, bearer, connect_client, instances_env, settings_with

from leadstream.pacing import Backoff
from leadstream.realtime.emitter import Emitter
from leadstream.server.config import Settings
from leadstream.server.http.appkeys import EXPORTS, STORE
from leadstream.server.jobs.exports import DownloadSigner, ExportService
from leadstream.server.jobs.queue import (
    FAILED_MESSAGE,
    STALE_JOB_S,
    InProcessJobQueue,
    JobFailed,
    JobRefused,
    RedisJobQueue,
    Retry,
    create_limited_job,
)
from leadstream.server.jobs.worker import print_queue_stats
from leadstream.store.mongodb import MongoStore
from leadstream.store.people_generator import PeopleGenerator
from leadstream.store.records import Job, LeadInput
from leadstream.store.sqlite import SqliteStore


async def test_redis_queue_retries_then_buries(redis_server, capsys):
    client = aioredis.Redis.from_url(redis_server.url)
    queue = RedisJobQueue(
        client, concurrency=2, retry=Backoff(attempts=3, base_delay_s=0.05), visibility_s=5
    )
    runs: dict[str, int] = {}
    dead: list[tuple[str, str, str]] = []

    async def flaky(job_id: str) -> None:
        runs[job_id] = runs.get(job_id, 0) + 1
        if job_id.startswith("broken") or runs[job_id] < 3:
            raise RuntimeError(f"attempt {runs[job_id]} failed")

    async def on_dead(job_id: str, failure: JobFailed) -> None:
        dead.append((job_id, failure.code, failure.message))

    queue.register("flaky", flaky, on_dead)
    await queue.start()
    try:
        await queue.submit("flaky", "works-third-time")
        await queue.submit("flaky", "broken-1")
        async with asyncio.timeout(15):
            while len(dead) < 1 or runs.get("works-third-time", 0) < 3:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert runs == {"works-third-time": 3, "broken-1": 3}
        # The user reads a plain message; the exception is for the log and the dead letters.
        assert dead == [("broken-1", "failed_after_retries", FAILED_MESSAGE)]
        stats = await queue.stats()
        assert stats == {"queued": 0, "running": 0, "delayed": 0, "dead": 1}
        assert await queue.depth() == 0  # the gauge's figure: a dead letter waits for nothing
        ((entry_id, fields),) = await client.xrange(queue.dead_stream)
        assert fields[b"job"] == b"broken-1" and b"attempt 3" in fields[b"reason"]
        # What `leadstream jobs` prints of it.
        await print_queue_stats(Settings.from_env({"REDIS_URL": redis_server.url}))
        assert capsys.readouterr().out.splitlines() == [
            "queued=0 running=0 delayed=0 dead=1",
            f"dead {entry_id.decode()}: flaky broken-1: RuntimeError: attempt 3 failed",
        ]
    finally:
        await queue.close()
        await client.aclose()


# -- the handler contract (arq's), the same on both queues ----------------------

# Retries of a plain exception come back within 20 ms: a run 0.5 s later can
# only be the handler's own `Retry(defer_s)`.
FAST_RETRY = Backoff(attempts=3, base_delay_s=0.01, max_delay_s=0.02)
DEFER_S = 0.5


class ContractQueue:
    """A queue of either kind running one `contract` job kind, with what its
    handler and failure handler saw."""

    def __init__(self, queue: InProcessJobQueue | RedisJobQueue, client=None) -> None:
        self.queue = queue
        self.client = client
        self.runs: dict[str, list[float]] = {}  # job id -> when each run started
        self.failures: list[tuple[str, str, str, dict]] = []
        self.plan: dict[str, list[BaseException | None]] = {}  # job id -> what each run raises

    async def handler(self, job_id: str) -> None:
        self.runs.setdefault(job_id, []).append(time.time())
        outcomes = self.plan[job_id]
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if outcome is not None:
            raise outcome

    async def on_failed(self, job_id: str, failure: JobFailed) -> None:
        self.failures.append((job_id, failure.code, failure.message, failure.details))

    async def submit(self, job_id: str, *outcomes: BaseException | None) -> None:
        self.plan[job_id] = list(outcomes)
        await self.queue.submit("contract", job_id)

    async def dead(self) -> list[str]:
        """Job ids in the dead letters."""
        if isinstance(self.queue, InProcessJobQueue):
            return [job_id for _, job_id, _ in self.queue.dead]
        entries = await self.client.xrange(self.queue.dead_stream)
        return [fields[b"job"].decode() for _, fields in entries]

    async def settled(self) -> None:
        """Wait until no job is queued, running or waiting for a retry, in two
        reads 0.1 s apart: the Redis queue's counts are three reads, and a
        retry moving from the delayed set to the stream may fall between them."""
        quiet = 0
        async with asyncio.timeout(15):
            while quiet < 2:
                if isinstance(self.queue, InProcessJobQueue):
                    idle = self.queue.depth == 0
                else:
                    idle = await self.queue.depth() == 0
                quiet = quiet + 1 if idle else 0
                await asyncio.sleep(0.1 if idle else 0.05)


@pytest.fixture(params=["in_process", "redis"])
async def contract(request):
    if request.param == "in_process":
        queue = InProcessJobQueue(concurrency=2, retry=FAST_RETRY)
        client = None
    else:
        redis_server = request.getfixturevalue("redis_server")
        client = aioredis.Redis.from_url(redis_server.url)
        queue = RedisJobQueue(client, concurrency=2, retry=FAST_RETRY, visibility_s=5)
    jobs = ContractQueue(queue, client)
    queue.register("contract", jobs.handler, jobs.on_failed)
    await queue.start()
    yield jobs
    await queue.close()
    if client is not None:
        await client.aclose()


async def test_a_job_that_raises_retry_runs_again_after_its_delay_then_is_done(contract):
    await contract.submit("deferred", Retry(defer_s=DEFER_S), None)
    await contract.settled()
    first, second = contract.runs["deferred"]
    # asyncio may wake a timer up to its clock's resolution early.
    assert second - first >= DEFER_S - 0.005, "ran again before the delay Retry asked for"
    assert contract.failures == [] and await contract.dead() == []


async def test_a_job_that_raises_job_failed_fails_with_its_code_and_is_not_retried(contract):
    failed = JobFailed("unknown_search", "that search is unknown or expired", {"searchId": "s1"})
    await contract.submit("doomed", failed)
    await contract.settled()
    await asyncio.sleep(0.2)  # ten times the retry backoff: a retry would have run by now
    assert len(contract.runs["doomed"]) == 1
    assert contract.failures == [
        ("doomed", "unknown_search", "that search is unknown or expired", {"searchId": "s1"})
    ]
    assert await contract.dead() == []  # a reason the user can act on is not a dead letter


async def test_retries_count_as_attempts_then_the_job_fails_after_retries(contract):
    await contract.submit("never-ready", Retry(defer_s=0.05))
    await contract.submit("crashes-once", RuntimeError("boom"), None)
    await contract.settled()
    assert len(contract.runs["never-ready"]) == FAST_RETRY.attempts
    assert len(contract.runs["crashes-once"]) == 2
    assert contract.failures == [("never-ready", "failed_after_retries", FAILED_MESSAGE, {})]
    assert await contract.dead() == ["never-ready"]


async def test_killed_worker_mid_export_is_taken_over(tmp_path, redis_server, connect):
    db = tmp_path / "shared" / "leadstream.db"
    store = SqliteStore(db)
    await store.open()
    people = list(PeopleGenerator(5).people(20_000))
    for start in range(0, len(people), 5000):
        await store.upsert_leads(
            "acme", [LeadInput.from_person(p) for p in people[start : start + 5000]]
        )
    await store.close()
    env = instances_env(
        db.parent,
        redis_server.url,
        LEADSTREAM_PEOPLE="0",
        LEADSTREAM_SERVE_WORKERS="0",  # only the worker processes take jobs
        LEADSTREAM_EXPORT_PAGE="10",  # a slow export: 2,000 pages
        LEADSTREAM_JOB_VISIBILITY="2",
        LEADSTREAM_LOG_LEVEL="WARNING",
    )
    async with ServerProcess(tmp_path / "server", env) as server:
        token = server.token()
        events = ("export:progress", "export:ready", "export:failed")
        tab = await connect_client(server.url, {"token": token}, events)
        sio, log = tab.sio, tab.log
        first = server.worker()
        second = None
        try:
            async with aiohttp.ClientSession(headers=bearer(token)) as http:
                created = await http.post(server.url + "/api/exports", json={"filter": {}})
                job_id = (await created.json())["jobId"]
                async with asyncio.timeout(30):
                    while True:
                        job = await (await http.get(f"{server.url}/api/jobs/{job_id}")).json()
                        if job["status"] == "running" and job["done"] >= 1000:
                            break
                        await asyncio.sleep(0.05)
                first.send_signal(signal.SIGKILL)  # dies mid-export, without a word
                first.wait()
                second = server.worker()
                ready = await log.wait_for("export:ready", timeout=60)
                assert ready["jobId"] == job_id and ready["rows"] == 20_000
                job = await (await http.get(f"{server.url}/api/jobs/{job_id}")).json()
                assert job["status"] == "done" and job["result"]["rows"] == 20_000
                download = await http.get(server.url + ready["url"])
                rows = list(csv.reader(io.StringIO(await download.text())))
                assert len(rows) == 20_001
        finally:
            await sio.disconnect()
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(timeout=10)


async def export_peak_bytes(tmp_path, rows: int) -> int:
    store = SqliteStore(tmp_path / f"export-{rows}.db")
    await store.open()
    people = list(PeopleGenerator(9).people(rows))
    for start in range(0, rows, 5000):
        await store.upsert_leads(
            "acme", [LeadInput.from_person(p) for p in people[start : start + 5000]]
        )
    del people
    queue = InProcessJobQueue(concurrency=1)

    class NoSockets:
        async def emit(self, event, data=None, *, to=None):
            return None

    service = ExportService(
        store=store,
        queue=queue,
        emitter=Emitter(NoSockets()),
        signer=DownloadSigner("s" * 40, ttl_s=60),
        folder=tmp_path / "exports",
    )
    job = await store.create_job("acme", "alice", "export", {"searchId": None})
    tracemalloc.start()
    await service.run(f"acme:{job.id}")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (await store.get_job("acme", job.id)).result["rows"] == rows
    await store.close()
    return peak


async def test_export_memory_stays_flat(tmp_path):
    small = await export_peak_bytes(tmp_path, 10_000)
    large = await export_peak_bytes(tmp_path, 100_000)
    assert large < small * 1.5, (small, large)  # ten times the rows, about the same memory


@pytest.fixture(params=["sqlite", "mongodb"])
async def job_store(request, tmp_path):
    """A store of each backend: SQLite, and MongoDB (`MONGODB_URI`, else the
    mongoeco stand-in of `tests/mongo_standin.py`)."""
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "jobs.db")
        await store.open()
        yield store
        await store.close()
        return
    uri, standin = os.environ.get("MONGODB_URI"), None
    if not uri:
        python = standin_python()
        if python is None:
            if os.environ.get("CI"):
                pytest.fail("CI must run the MongoDB backend: no MONGODB_URI, no stand-in")
            pytest.skip(
                "no MONGODB_URI and no mongoeco stand-in: run tests/prepare_mongo_standin.sh"
            )
        standin = MongoStandin(python, tmp_path / "mongoeco.log")
        uri = standin.start()
    database = f"leadstream_jobs_{secrets.token_hex(6)}"
    store = MongoStore(uri, database=database)
    await store.open()
    try:
        yield store
    finally:
        await store.client.drop_database(database)
        await store.close()
        if standin is not None:
            standin.stop()


async def test_a_user_never_has_more_than_jobs_per_user_active(job_store):
    async def create(user: str = "alice", *, now: float | None = None) -> Job | JobRefused:
        try:
            return await create_limited_job(job_store, "acme", user, "export", {}, limit=3, now=now)
        except JobRefused as exc:
            return exc

    raced = await asyncio.gather(*(create() for _ in range(30)))
    admitted = [job for job in raced if isinstance(job, Job)]
    refusals = [exc for exc in raced if isinstance(exc, JobRefused)]
    # SQLite counts and inserts in one statement: exactly 3. MongoDB inserts then
    # counts: never more than 3, racers may all give up; one at a time tops it up.
    assert len(admitted) == 3 if job_store.backend == "sqlite" else len(admitted) <= 3
    while len(admitted) < 3:
        job = await create()
        assert isinstance(job, Job)
        admitted.append(job)
    refused = await create()
    assert isinstance(refused, JobRefused) and refused.status == 429
    assert refused.code == "too_many_jobs" and "3 exports or imports" in refused.message
    assert {exc.code for exc in refusals} <= {"too_many_jobs"}

    assert isinstance(await create("bob"), Job)  # another user has their own limit
    await job_store.update_job(admitted[0].id, status="done")
    await job_store.update_job(admitted[1].id, status="failed")
    assert isinstance(await create(), Job)
    assert isinstance(await create(), Job)
    assert isinstance(await create(), JobRefused)
    # Jobs not updated for an hour belong to a process that died: they no longer count.
    assert isinstance(await create(now=time.time() + STALE_JOB_S + 60), Job)


async def test_export_quota_stops_big_exports_and_refuses_new_ones_when_full(
    settings, start_server, connect, token, http
):
    quota = 64 * 1024
    server = await start_server(settings_with(settings, export_quota_bytes=quota, export_page=50))
    store = server.app[STORE]
    exports = server.app[EXPORTS]
    people = list(PeopleGenerator(3).people(1000))
    await store.upsert_leads("acme", [LeadInput.from_person(p) for p in people])
    await store.upsert_leads("globex", [LeadInput.from_person(p) for p in people[:10]])
    owner = await connect(server, token())
    url = server.make_url("/api/exports")

    # 1,000 leads (about 200 KB) do not fit: the export stops and keeps nothing.
    big = await http.post(url, json={"filter": {}}, headers=bearer(token()))
    assert big.status == 202
    big_id = (await big.json())["jobId"]
    failed = await owner.log.wait_for("export:failed", lambda d: d["jobId"] == big_id)
    assert failed["error"]["code"] == "export_quota_exceeded"
    assert "frees up in about" in failed["error"]["message"]
    assert failed["error"]["details"]["quotaBytes"] == quota
    job = await (
        await http.get(server.make_url(f"/api/jobs/{big_id}"), headers=bearer(token()))
    ).json()
    assert job["status"] == "failed" and job["error"]["code"] == "export_quota_exceeded"
    assert exports.org_usage("acme")[0] == 0

    # 50 of them fit.
    leads = (await store.list_leads("acme", limit=50)).leads
    small = await http.post(
        url, json={"filter": {"ids": [lead.id for lead in leads]}}, headers=bearer(token())
    )
    assert small.status == 202
    small_id = (await small.json())["jobId"]
    ready = await owner.log.wait_for("export:ready", lambda d: d["jobId"] == small_id)
    assert ready["rows"] == 50
    used, frees_in_s = exports.org_usage("acme")
    assert 0 < used <= quota and frees_in_s is not None

    # Files kept from before the quota was lowered fill it: new exports get 409.
    (exports.org_folder("acme") / "older.csv").write_bytes(b"x" * quota)
    full = await http.post(url, json={"filter": {}}, headers=bearer(token()))
    assert full.status == 409
    error = (await full.json())["error"]
    assert error["code"] == "export_quota_exceeded" and "frees up in about" in error["message"]
    assert error["details"]["usedBytes"] >= quota and error["details"]["retryAfterS"] > 0
    other = await http.post(url, json={"filter": {}}, headers=bearer(token("globex", "carol")))
    assert other.status == 202  # another org's exports are its own

    # Space frees up when the files' links expire.
    exports.remove_expired_files(now=time.time() + exports.signer.ttl_s + 5)
    assert exports.org_usage("acme") == (0, None)
    again = await http.post(url, json={"filter": {"ids": [leads[0].id]}}, headers=bearer(token()))
    assert again.status == 202
    assert await store.count_leads("acme") == 1000  # nothing stored was touched


async def test_the_export_tool_reports_a_refused_job_to_the_model(server, connect, token):
    """`export_leads` at the user's job limit is a tool error the reply explains."""
    store = server.app[STORE]
    for _ in range(3):  # the default LEADSTREAM_JOBS_PER_USER, all still queued
        assert await store.create_job_within_limit(
            "acme", "alice", "export", {}, limit=3, active_since="2000-01-01T00:00:00.000Z"
        )
    client = await connect(server, token())
    found = await client.chat("Find 5 CFOs in fintech")
    done = await client.chat("export them to csv", found["conversationId"])
    tool = await client.log.wait_for("chat:tool", lambda d: d["status"] == "error")
    assert tool["name"] == "export_leads" and tool["error"]["code"] == "too_many_jobs"
    assert done["stopped"] is False
