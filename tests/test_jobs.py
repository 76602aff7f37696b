"""Background jobs: retries and dead letters on a real redis-server, a worker
process killed in the middle of an export, and exports whose memory does not
grow with their size."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import subprocess
import sys
import tracemalloc

import aiohttp
import pytest
import redis.asyncio as aioredis
import socketio
from support import EventLog, RedisServer, ServerProcess, bearer, recorder

from leadstream.realtime.emitter import Emitter
from leadstream.server.exports import DownloadSigner, ExportService
from leadstream.server.jobs import InProcessJobQueue, RedisJobQueue, RetryPolicy
from leadstream.store.people_generator import PeopleGenerator
from leadstream.store.records import LeadInput
from leadstream.store.sqlite import SqliteStore


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


async def test_redis_queue_retries_then_buries(redis_server):
    client = aioredis.Redis.from_url(redis_server.url)
    queue = RedisJobQueue(
        client, concurrency=2, retry=RetryPolicy(max_attempts=3, base_delay_s=0.05), visibility_s=5
    )
    runs: dict[str, int] = {}
    dead: list[tuple[str, str, str]] = []

    async def flaky(job_id: str) -> None:
        runs[job_id] = runs.get(job_id, 0) + 1
        if job_id.startswith("broken") or runs[job_id] < 3:
            raise RuntimeError(f"attempt {runs[job_id]} failed")

    async def on_dead(job_id: str, code: str, message: str) -> None:
        dead.append((job_id, code, message))

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
        assert dead == [("broken-1", "failed_after_retries", "RuntimeError: attempt 3 failed")]
        stats = await queue.stats()
        assert stats == {"queued": 0, "running": 0, "delayed": 0, "dead": 1}
        ((_, fields),) = await client.xrange(queue.dead_stream)
        assert fields[b"job"] == b"broken-1" and b"attempt 3" in fields[b"reason"]
    finally:
        await queue.close()
        await client.aclose()


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
    env = {
        "REDIS_URL": redis_server.url,
        "LEADSTREAM_STORE": f"sqlite:///{db}",
        "LEADSTREAM_DATA_DIR": str(tmp_path / "shared"),
        "LEADSTREAM_SECRET": "jobs-secret-" + "j" * 32,
        "LEADSTREAM_PEOPLE": "0",
        "LEADSTREAM_SERVE_WORKERS": "0",  # only the worker processes take jobs
        "LEADSTREAM_EXPORT_PAGE": "10",  # a slow export: 2,000 pages
        "LEADSTREAM_JOB_VISIBILITY": "2",
        "LEADSTREAM_LOG_LEVEL": "WARNING",
    }
    async with ServerProcess(tmp_path / "server", env) as server:
        token = server.cli("token", "--org", "acme", "--user", "alice").stdout.strip()
        log = EventLog()
        sio = socketio.AsyncClient(reconnection=False)
        for event in ("export:progress", "export:ready", "export:failed"):
            sio.on(event, recorder(log, event))
        await sio.connect(server.url, auth={"token": token}, transports=["websocket"])
        worker_env = {**os.environ, **env}
        first = subprocess.Popen(
            [sys.executable, "-m", "leadstream", "worker"], env=worker_env, cwd=tmp_path
        )
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
                second = subprocess.Popen(
                    [sys.executable, "-m", "leadstream", "worker"], env=worker_env, cwd=tmp_path
                )
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
        store=store, queue=queue, emitter=Emitter(NoSockets()),
        signer=DownloadSigner("s" * 40, ttl_s=60), folder=tmp_path / "exports",
    )  # fmt: skip
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
