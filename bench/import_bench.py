"""CSV import of 100,000 rows (issue 6): rows/s of the import job (parse,
validate, upsert in batches through the change feed's store calls), for a
first import (every row a new lead) and the same file again (every row an
update), plus peak memory: Python allocations by tracemalloc (a traced
rerun, since tracing slows Python down) and the process's peak RSS.

The file is generated from the people directory's generator, with every
column PROTOCOL.md names (several emails/phones joined by `;`).

Run: python bench/import_bench.py [--rows 100000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import resource
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from leadstream.realtime.emitter import Emitter
from leadstream.server.jobs.imports import ImportService
from leadstream.server.jobs.queue import InProcessJobQueue
from leadstream.store.people_generator import PeopleGenerator
from leadstream.store.sqlite import SqliteStore

HEADER = (
    "Name",
    "Title",
    "Company",
    "Emails",
    "Phones",
    "LinkedIn",
    "Location",
    "Industry",
    "Tags",
)


class NoSockets:
    """Nobody is connected in this bench; events go nowhere."""

    async def emit(self, event: str, data: Any = None, *, to: str | None = None) -> None:
        return None


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i, person in enumerate(PeopleGenerator(7).people(rows)):
            writer.writerow(
                [
                    person.name,
                    person.title,
                    person.company,
                    ";".join(person.emails),
                    ";".join(person.phones),
                    person.linkedin or "",
                    person.location or "",
                    person.industry or "",
                    "bench" if i % 2 else "bench;even",
                ]
            )


async def run_import(service: ImportService, store: SqliteStore, source: Path) -> dict[str, Any]:
    """One import job of a copy of `source` (the job deletes its file); returns its result."""
    upload = service.upload_path()
    shutil.copy(source, upload)
    queued = upload.with_suffix(".csv")
    upload.replace(queued)
    job = await store.create_job("bench", "bench", "import", {"file": queued.name})
    await service.run(f"bench:{job.id}")
    done = await store.get_job("bench", job.id)
    assert done is not None and done.status == "done", done
    assert done.result is not None
    return done.result


async def bench(folder: Path, rows: int, batch: int) -> None:
    source = folder / "people.csv"
    write_csv(source, rows)
    size_mb = source.stat().st_size / 1e6
    print(f"file: {rows:,} rows, {size_mb:.1f} MB")
    store = SqliteStore(folder / "bench.db")
    await store.open()
    service = ImportService(
        store=store,
        queue=InProcessJobQueue(concurrency=1),
        emitter=Emitter(NoSockets()),
        folder=folder / "imports",
        batch_size=batch,
    )
    for label in ("first import (inserts)", "same file again (updates)"):
        started = time.perf_counter()
        result = await run_import(service, store, source)
        elapsed = time.perf_counter() - started
        print(
            f"{label:<27} {elapsed:6.2f} s  {rows / elapsed:8,.0f} rows/s  "
            f"saved {result['saved']:,}, updated {result['updated']:,}, "
            f"errors {len(result['errors'])}"
        )
    await store.close()

    # Traced on a fresh database, so it measures the insert path again.
    traced_store = SqliteStore(folder / "traced.db")
    await traced_store.open()
    traced = ImportService(
        store=traced_store,
        queue=InProcessJobQueue(concurrency=1),
        emitter=Emitter(NoSockets()),
        folder=folder / "imports",
        batch_size=batch,
    )
    tracemalloc.start()
    await run_import(traced, traced_store, source)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    await traced_store.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"peak Python memory (tracemalloc) {peak / 1e6:.1f} MB; process peak RSS {rss_mb:.0f} MB")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        await bench(Path(folder), args.rows, args.batch)


if __name__ == "__main__":
    asyncio.run(main())
