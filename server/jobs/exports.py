"""CSV exports: the job that writes the file, and its signed download URL.

Rows stream from the store a keyset page at a time into the file, so memory
does not grow with the export. Columns (contact columns first) and the
formula-injection escaping follow PROTOCOL.md.

Files are written to a folder per org (`folder/<hash of the org>/<jobId>.csv`)
so that what an org keeps on disk is known without the store: its export
files, finished or being written, may take at most `quota_bytes`. A new
export past the quota is refused (409 `export_quota_exceeded`, saying when
space frees up: files are removed once their download link expires); an
export that would cross it while writing stops and fails with the same code,
its partial file removed.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path

from leadstream.agent.tools import ExportRequest
from leadstream.realtime.emitter import Emitter
from leadstream.server.jobs.queue import (
    JobFailed,
    JobQueue,
    JobRefused,
    create_limited_job,
    job_ref,
    load_job,
)
from leadstream.store.base import Store
from leadstream.store.errors import QueryTooBroad
from leadstream.store.records import Job, Lead, LeadFilter, Person

log = logging.getLogger(__name__)

COLUMNS = (
    "Name",
    "Company",
    "Phone",
    "Email",
    "LinkedIn",
    "Title",
    "Location",
    "Industry",
    "Tags",
    "Added",
    "Phones",
    "Emails",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PROGRESS_EVERY = 1000
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ExportFailed(JobFailed):
    """An export that cannot finish for a reason retrying cannot change."""


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
        row.name,
        row.company,
        phones[0] if phones else "",
        emails[0] if emails else "",
        row.linkedin or "",
        row.title,
        row.location or "",
        row.industry or "",
        "; ".join(tags),
        added,
        "; ".join(phones),
        "; ".join(emails),
    ]
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
        # Bytes: compare_digest refuses str with non-ASCII characters (a 500 otherwise).
        expected = self._signature(job_id, expires_at).encode()
        good = hmac.compare_digest(expected, signature.encode("utf-8", "replace"))
        return good and expires_at >= time.time()

    def _signature(self, job_id: str, expires: int) -> str:
        return hmac.new(self._key, f"{job_id}:{expires}".encode(), hashlib.sha256).hexdigest()


class ExportService:
    """Creates export jobs and runs them as the job queue's `export` handler.

    :param queue: the job queue (in-process or Redis).
    :param folder: where export files are written (a subfolder per org).
    :param page_size: leads read from the store per page while writing.
    :param jobs_per_user: queued + running jobs (exports and imports) a user may have.
    :param quota_bytes: bytes of export files an org may keep on disk.
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
        jobs_per_user: int = 3,
        quota_bytes: int = 256 * 1024 * 1024,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._emitter = emitter
        self.signer = signer
        self.folder = folder
        self._page_size = page_size
        self._jobs_per_user = jobs_per_user
        self.quota_bytes = quota_bytes
        self._on_failure = on_failure
        queue.register(self.KIND, self.run, self.give_up)

    def org_folder(self, org: str) -> Path:
        """The org's folder: a hash of its id, so that any id makes a safe name."""
        return self.folder / hashlib.sha256(org.encode()).hexdigest()[:24]

    def file_path(self, org: str, job_id: str) -> Path:
        """Where the export `job_id` of `org` is (or will be) written."""
        return self.org_folder(org) / f"{job_id}.csv"

    def path(self, job_id: str) -> Path:
        """The finished file of export `job_id`, in whichever org's folder it
        is (job ids are unique; a signed link names no org); a path that does
        not exist when there is none."""
        if JOB_ID.fullmatch(job_id):
            for found in self.folder.glob(f"*/{job_id}.csv"):
                return found
        return self.folder / "missing.csv"

    def remove_expired_files(self, *, now: float | None = None) -> int:
        """Delete export files older than a download link lives, and partial
        files nothing has written to for as long (their process died);
        returns how many."""
        if not self.folder.exists():
            return 0
        cutoff = (time.time() if now is None else now) - self.signer.ttl_s
        removed = 0
        for pattern in ("*/*.csv", "*/*.part", "*.csv"):  # *.csv: from before the org folders
            for path in self.folder.glob(pattern):
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def org_usage(self, org: str, *, now: float | None = None) -> tuple[int, float | None]:
        """(bytes of the org's export files, finished or being written; seconds
        until the oldest is removed, None when there is none)."""
        used, oldest = 0, None
        try:
            entries = list(os.scandir(self.org_folder(org)))
        except FileNotFoundError:
            return 0, None
        for entry in entries:
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue  # removed while we looked
            used += stat.st_size
            oldest = stat.st_mtime if oldest is None else min(oldest, stat.st_mtime)
        if oldest is None:
            return used, None
        return used, max(0.0, oldest + self.signer.ttl_s - (time.time() if now is None else now))

    async def start(self, request: ExportRequest) -> str:
        """Queue an export; returns the job id.

        :raises JobRefused: 429 `too_many_jobs` when the user has
            `jobs_per_user` jobs queued or running; 409
            `export_quota_exceeded` when the org's export files fill its quota.
        """
        used, frees_in_s = await asyncio.to_thread(self.org_usage, request.org)
        if used >= self.quota_bytes:
            message, details = self._over_quota(used, frees_in_s)
            raise JobRefused(409, "export_quota_exceeded", message, details)
        params: dict[str, object] = {"searchId": request.search_id}
        if request.filter is not None:
            params["filter"] = {k: v for k, v in asdict(request.filter).items() if v}
        job = await create_limited_job(
            self._store, request.org, request.user, self.KIND, params, limit=self._jobs_per_user
        )
        await self._queue.submit(self.KIND, job_ref(job))
        return job.id

    def _over_quota(self, used: int, frees_in_s: float | None) -> tuple[str, dict[str, object]]:
        """The message and details of an export refused or stopped by the quota."""
        minutes = max(1, round((frees_in_s or 0) / 60))
        message = (
            f"your organisation's export files take {used:,} bytes of its quota of "
            f"{self.quota_bytes:,}; an export file is removed when its download link "
            f"expires, {max(1, self.signer.ttl_s // 60)} minutes after it was made: "
            f"space frees up in about {minutes} minute{'s' if minutes != 1 else ''}"
        )
        details: dict[str, object] = {
            "quotaBytes": self.quota_bytes,
            "usedBytes": used,
            "retryAfterS": round(frees_in_s or 0),
        }
        return message, details

    async def run(self, ref: str) -> None:
        """The queue's handler: write the file, then report it.

        :raises ExportFailed: a failure that retrying cannot fix (the queue
            then calls `give_up`); other exceptions are retried.
        """
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
        except QueryTooBroad as exc:  # retrying would only cost the same again
            raise ExportFailed(exc.code, exc.message) from exc
        url = self.signer.url(job.id)
        await self._store.update_job(
            job.id, status="done", done=rows, total=rows, result={"rows": rows, "url": url}
        )
        await self._emitter.to_user(
            job.org, job.user, "export:ready", {"jobId": job.id, "rows": rows, "url": url}
        )

    async def give_up(self, ref: str, failure: JobFailed) -> None:
        """The queue's failure handler: the job failed for good (`ExportFailed`,
        or the queue gave up on it)."""
        job = await load_job(self._store, ref)
        if job is None:
            return
        if self._on_failure is not None:
            self._on_failure()
        log.warning("export %s failed: %s: %s", job.id, failure.code, failure.message)
        error = failure.to_wire()
        await self._store.update_job(job.id, status="failed", error=error)
        await self._emitter.to_user(
            job.org, job.user, "export:failed", {"jobId": job.id, "error": error}
        )

    async def _write(self, job: Job, request: ExportRequest) -> int:
        total, pages = await self._source(request)
        await self._store.update_job(job.id, total=total)
        final = self.file_path(job.org, job.id)
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_suffix(".part")
        rows = 0
        reported = 0
        try:
            with partial.open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(COLUMNS)
                async for page in pages:
                    writer.writerows(csv_row(row) for row in page)
                    rows += len(page)
                    self._check_quota(job.org, f.tell(), rows, total)
                    if rows - reported >= PROGRESS_EVERY:
                        reported = rows
                        await self._progress(job, rows, total)
            partial.replace(final)
        except BaseException:
            partial.unlink(missing_ok=True)  # a retry starts over; a failure keeps nothing
            raise
        return rows

    def _check_quota(self, org: str, written: int, rows: int, total: int) -> None:
        """Stop an export whose file, at the size its rows so far foretell,
        would take the org's export files past the quota.

        :raises ExportFailed: `export_quota_exceeded`.
        """
        used, frees_in_s = self.org_usage(org)  # this file as flushed, other exports too
        others = max(0, used - written)
        needed = max(written, written * total // rows) if rows else written
        if others + needed <= self.quota_bytes:
            return
        message, details = self._over_quota(others, frees_in_s)
        raise ExportFailed(
            "export_quota_exceeded",
            f"the export stopped after {rows:,} of {total:,} rows: its file would take "
            f"about {needed:,} bytes; {message}",
            {**details, "neededBytes": needed},
        )

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


def _lead_filter(params: dict[str, object] | None) -> LeadFilter | None:
    if not params:
        return None
    ids = params.get("ids")
    return LeadFilter(**{**params, "ids": tuple(ids) if isinstance(ids, list) else ids})  # type: ignore[arg-type]


async def _pages(people: list[Person], size: int = 1000) -> AsyncIterator[list[Person]]:
    for start in range(0, len(people), size):
        yield people[start : start + size]
