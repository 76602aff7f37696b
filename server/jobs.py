"""Background jobs of the embedded default: an in-process runner with bounded
concurrency. Job records (status, progress, result) live in the store, so
`GET /api/jobs/{id}` reads the same data whichever code runs the job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class JobRunner:
    """Runs job coroutines, at most `concurrency` at a time.

    The work function owns its job record: it marks it running, done or
    failed (and is cancelled, to record `interrupted`, when the server stops).
    """

    def __init__(self, *, concurrency: int, on_depth: Callable[[int], None] | None = None) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_depth = on_depth

    def submit(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.create_task(self._run(name, work), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        self._report_depth()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._report_depth()

    def _report_depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(len(self._tasks))

    async def _run(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        async with self._slots:
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Work functions record their own failures; this is a bug in one.
                log.exception("job %s failed", name)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
