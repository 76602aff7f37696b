"""CSV exports: the job that writes the file, and its signed download URL.

Rows stream from the store a keyset page at a time into the file, so memory
does not grow with the export. Columns (contact columns first) and the
formula-injection escaping follow PROTOCOL.md.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path

from leadstream.agent.tools import ExportRequest
from leadstream.realtime.emitter import Emitter
from leadstream.server.jobs import JobQueue, job_ref, load_job
from leadstream.store.base import Store
from leadstream.store.records import Job, Lead, LeadFilter, Person

log = logging.getLogger(__name__)

COLUMNS = (
    "Name", "Company", "Phone", "Email", "LinkedIn", "Title", "Location", "Industry", "Tags",
    "Added", "Phones", "Emails",
)  # fmt: skip
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PROGRESS_EVERY = 1000


class ExportFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def safe_cell(value: str | None) -> str:
    """A cell a spreadsheet will not run as a formula."""
    if not value:
        return ""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def csv_row(row: Lead | Person) -> list[str]:
    emails, phones = list(row.emails), list(row.phones)
    tags = list(row.tags) if isinstance(row, Lead) else []
    added = row.created_at if isinstance(row, Lead) else ""
    values = [
        row.name, row.company, phones[0] if phones else "", emails[0] if emails else "",
        row.linkedin or "", row.title, row.location or "", row.industry or "", "; ".join(tags),
        added, "; ".join(phones), "; ".join(emails),
    ]  # fmt: skip
    return [safe_cell(v) for v in values]


class DownloadSigner:
    """Signs export download paths so they work without a bearer token until they expire."""

    def __init__(self, secret: str, *, ttl_s: int) -> None:
        self._key = hashlib.sha256(b"leadstream-export:" + secret.encode()).digest()
        self.ttl_s = ttl_s

    def url(self, job_id: str, *, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.ttl_s)
        return (
            f"/api/exports/{job_id}/download?expires={expires}"
            f"&signature={self._signature(job_id, expires)}"
        )

    def verify(self, job_id: str, expires: str, signature: str) -> bool:
        try:
            expires_at = int(expires)
        except ValueError:
            return False
        good = hmac.compare_digest(self._signature(job_id, expires_at), signature)
        return good and expires_at >= time.time()

    def _signature(self, job_id: str, expires: int) -> str:
        return hmac.new(self._key, f"{job_id}:{expires}".encode(), hashlib.sha256).hexdigest()


class ExportService:
    """Creates export jobs and runs them as the job queue's `export` handler.

    :param queue: the job queue (in-process or Redis).
    :param folder: where export files are written.
    :param page_size: leads read from the store per page while writing.
    """

    KIND = "export"

    def __init__(
        self,
        *,
        store: Store,
        queue: JobQueue,
        emitter: Emitter,
        signer: DownloadSigner,
        folder: Path,
        page_size: int = 1000,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._emitter = emitter
        self.signer = signer
        self.folder = folder
        self._page_size = page_size
        self._on_failure = on_failure
        queue.register(self.KIND, self.run, self.give_up)

    def path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.csv"

    def remove_expired_files(self, *, now: float | None = None) -> int:
        """Delete export files older than a download link lives; returns how many."""
        if not self.folder.exists():
            return 0
        cutoff = (time.time() if now is None else now) - self.signer.ttl_s
        removed = 0
        for path in self.folder.glob("*.csv"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    async def start(self, request: ExportRequest) -> str:
        params: dict[str, object] = {"searchId": request.search_id}
        if request.filter is not None:
            params["filter"] = {k: v for k, v in asdict(request.filter).items() if v}
        job = await self._store.create_job(request.org, request.user, self.KIND, params)
        await self._queue.submit(self.KIND, job_ref(job))
        return job.id

    async def run(self, ref: str) -> None:
        """The queue's handler: write the file, then report it. A failure that
        retrying cannot fix is recorded here; others raise, to be retried."""
        job = await load_job(self._store, ref)
        if job is None or job.status in ("done", "failed"):
            return  # settled already (a retry of a job another worker finished)
        request = ExportRequest(
            org=job.org,
            user=job.user,
            filter=_lead_filter(job.params.get("filter")),
            search_id=job.params.get("searchId"),
        )
        await self._store.update_job(job.id, status="running")
        try:
            rows = await self._write(job, request)
        except ExportFailed as exc:
            await self._fail(job, exc.code, exc.message)
            return
        url = self.signer.url(job.id)
        await self._store.update_job(
            job.id, status="done", done=rows, total=rows, result={"rows": rows, "url": url}
        )
        await self._emitter.to_user(
            job.org, job.user, "export:ready", {"jobId": job.id, "rows": rows, "url": url}
        )

    async def give_up(self, ref: str, code: str, message: str) -> None:
        """The queue's dead-letter handler: the job failed for good."""
        job = await load_job(self._store, ref)
        if job is not None:
            await self._fail(job, code, message)

    async def _write(self, job: Job, request: ExportRequest) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        total, pages = await self._source(request)
        await self._store.update_job(job.id, total=total)
        partial = self.path(job.id).with_suffix(".part")
        rows = 0
        reported = 0
        with partial.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            async for page in pages:
                writer.writerows(csv_row(row) for row in page)
                rows += len(page)
                if rows - reported >= PROGRESS_EVERY:
                    reported = rows
                    await self._progress(job, rows, total)
        partial.replace(self.path(job.id))
        return rows

    async def _source(
        self, request: ExportRequest
    ) -> tuple[int, AsyncIterator[list[Lead]] | AsyncIterator[list[Person]]]:
        if request.search_id is not None:
            search = await self._store.get_search(request.org, request.search_id)
            if search is None:
                raise ExportFailed("unknown_search", "that search is unknown or expired")
            return len(search.people), _pages(search.people)
        total = await self._store.count_leads(request.org, request.filter)
        return total, self._store.iter_leads(request.org, request.filter, page_size=self._page_size)

    async def _progress(self, job: Job, done: int, total: int) -> None:
        await self._store.update_job(job.id, done=done)
        await self._emitter.to_user(
            job.org, job.user, "export:progress", {"jobId": job.id, "done": done, "total": total}
        )

    async def _fail(self, job: Job, code: str, message: str) -> None:
        if self._on_failure is not None:
            self._on_failure()
        error = {"code": code, "message": message}
        await self._store.update_job(job.id, status="failed", error=error)
        await self._emitter.to_user(
            job.org, job.user, "export:failed", {"jobId": job.id, "error": error}
        )


def _lead_filter(params: dict[str, object] | None) -> LeadFilter | None:
    if not params:
        return None
    ids = params.get("ids")
    return LeadFilter(**{**params, "ids": tuple(ids) if isinstance(ids, list) else ids})  # type: ignore[arg-type]


async def _pages(people: list[Person], size: int = 1000) -> AsyncIterator[list[Person]]:
    for start in range(0, len(people), size):
        yield people[start : start + size]
