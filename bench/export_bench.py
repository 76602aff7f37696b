"""CSV export of 10,000 and 100,000 leads (issue 6): wall time and peak
memory (Python allocations, by tracemalloc) of the export job, which streams
rows from the store a keyset page at a time into the file.

Run: python bench/export_bench.py [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from leadstream.realtime.emitter import Emitter
from leadstream.server.jobs.exports import DownloadSigner, ExportService
from leadstream.server.jobs.queue import InProcessJobQueue
from leadstream.store.people_generator import PeopleGenerator
from leadstream.store.records import LeadInput
from leadstream.store.sqlite import SqliteStore


class NoSockets:
    """Nobody is connected in this bench; events go nowhere."""

    async def emit(self, event: str, data: Any = None, *, to: str | None = None) -> None:
        return None


async def export(folder: Path, rows: int) -> tuple[float, int, int]:
    store = SqliteStore(folder / f"bench-{rows}.db")
    await store.open()
    batch: list[LeadInput] = []
    for person in PeopleGenerator(3).people(rows):
        batch.append(LeadInput.from_person(person))
        if len(batch) == 5000:
            await store.upsert_leads("bench", batch)
            batch = []
    if batch:
        await store.upsert_leads("bench", batch)
    service = ExportService(
        store=store,
        queue=InProcessJobQueue(concurrency=1),
        emitter=Emitter(NoSockets()),
        signer=DownloadSigner("b" * 40, ttl_s=60),
        folder=folder / "exports",
    )
    # Timed without tracing (tracemalloc slows Python down), then traced.
    job = await store.create_job("bench", "bench", "export", {"searchId": None})
    started = time.perf_counter()
    await service.run(f"bench:{job.id}")
    elapsed = time.perf_counter() - started
    traced = await store.create_job("bench", "bench", "export", {"searchId": None})
    tracemalloc.start()
    await service.run(f"bench:{traced.id}")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    size = service.path(job.id).stat().st_size
    await store.close()
    return elapsed, peak, size


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for rows in (int(n) for n in args.sizes.split(",")):
            elapsed, peak, size = await export(Path(folder), rows)
            print(
                f"export {rows:>7,} leads: {elapsed:6.2f} s ({rows / elapsed:9,.0f} rows/s), "
                f"peak Python memory {peak / 1e6:5.1f} MB, file {size / 1e6:5.1f} MB"
            )


if __name__ == "__main__":
    asyncio.run(main())
