"""CSV exports: the job that writes the file, and its signed download URL.

Rows stream from the store a keyset page at a time into the file, so memory
does not grow with the export. Columns (contact columns first) and the
formula-injection escaping follow PROTOCOL.md.
"""

from __future__ import annotations

import asyncio
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
from leadstream.server.jobs import JobRunner
from leadstream.store.base import Store
from leadstream.store.records import Job, Lead, Person

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
        self._ttl_s = ttl_s

    def url(self, job_id: str, *, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self._ttl_s)
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
    """Creates export jobs and runs them on the job runner.

    :param folder: where export files are written.
    """

    def __init__(
        self,
        *,
        store: Store,
        runner: JobRunner,
        emitter: Emitter,
        signer: DownloadSigner,
        folder: Path,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._runner = runner
        self._emitter = emitter
        self.signer = signer
        self.folder = folder
        self._on_failure = on_failure

    def path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.csv"

    async def start(self, request: ExportRequest) -> str:
        params: dict[str, object] = {"searchId": request.search_id}
        if request.filter is not None:
            params["filter"] = {k: v for k, v in asdict(request.filter).items() if v}
        job = await self._store.create_job(request.org, request.user, "export", params)
        self._runner.submit(f"export-{job.id}", lambda: self._run(job, request))
        return job.id

    async def _run(self, job: Job, request: ExportRequest) -> None:
        await self._store.update_job(job.id, status="running")
        try:
            rows = await self._write(job, request)
        except asyncio.CancelledError:
            await self._fail(job, "interrupted", "the server stopped during the export")
            raise
        except ExportFailed as exc:
            await self._fail(job, exc.code, exc.message)
            return
        except Exception:
            log.exception("export %s failed", job.id)
            await self._fail(job, "internal_error", "the export failed")
            return
        url = self.signer.url(job.id)
        await self._store.update_job(
            job.id, status="done", done=rows, total=rows, result={"rows": rows, "url": url}
        )
        await self._emitter.to_user(
            job.org, job.user, "export:ready", {"jobId": job.id, "rows": rows, "url": url}
        )

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
        return total, self._store.iter_leads(request.org, request.filter)

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


async def _pages(people: list[Person], size: int = 1000) -> AsyncIterator[list[Person]]:
    for start in range(0, len(people), size):
        yield people[start : start + size]
