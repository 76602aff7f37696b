"""CSV imports: the job that reads an uploaded file and saves its rows as leads.

The route (`server/http/routes/imports.py`) streams the upload to a file in `folder`
and calls `ImportService.start`; the job queue then runs `ImportService.run`,
in this process or in any worker sharing the data folder.

The file is read as a stream (the `csv` module over a UTF-8 text stream, a
batch of rows at a time in a worker thread), so memory does not grow with
the file. Nor with one row: the `csv` reader is fed lines read with a
bounded `readline`, so a line longer than `max_line` characters is read to
its end in pieces, never held, and reported as an error of its line; so is
a row whose lines together (a quoted cell spanning lines) pass `max_line`,
skipped to the line where its quotes close. A header longer than that
fails the job (`header_too_long`). The header row names the columns, case-insensitively: `name`,
`title`, `company`, `email`/`emails`, `phone`/`phones`, `linkedin`,
`location`, `industry`, `tags`; a cell may hold several values separated by
`;`. Other columns are ignored, so a file of our own CSV export imports as
it is (its `Phone`/`Phones` and `Email`/`Emails` pairs merge, its
formula-escaping quote is removed). Each row is validated by the same
pydantic model as `POST /api/leads` (`LeadCreate`); valid rows are saved in
batches through `Store.upsert_leads` (and so reach the change feed) with
`source: "import"` and the `personId` of `derived_person_id`, so importing a
file twice updates the same leads. An empty cell leaves that field of an
existing lead as it is.

Decisions where PROTOCOL.md is silent:
- Line numbers are those of the file (header = line 1), counting the lines
  inside quoted multi-line cells; an error names the line its row starts on.
  Blank lines are skipped. A row with more non-empty cells than the header
  has columns is an error (empty ones, as spreadsheets add, are not).
- Error messages are plain words; a `csv` parser error is named by what is
  wrong ("a quoted cell has text after its closing quote"), not by its text.
- `saved` counts new leads; `updated` counts every other valid row (each
  matched a lead that already existed, or a row above it in the file),
  changed or not. saved + updated + rows with errors = data rows.
- At most `max_errors` errors are listed; when there were more, the result
  and the event add `errorsOmitted: int`.
- Progress: `import:progress {jobId, rows, bytes, totalBytes}` goes to the
  user's connections (as `import:done` does) after a batch of rows when
  `progress_interval_s` has passed since the last one (the first batch is
  reported at once), and once more with the final counts before a
  successful `import:done` (unless the last one already said them). `rows`
  counts data rows read so far (saved + updated + rows in errors, listed or
  omitted); `bytes` of `totalBytes` of the file were read. The job's
  `done`/`total` are that `bytes`/`totalBytes`, written at the same moments,
  so polling `GET /api/jobs/{id}` and the events agree: bytes, not rows, as
  the row count is unknown until the end. A retried job starts over at 0. A
  job that fails sends no final progress, only `import:done` with `error`.
- Rows that are not UTF-8 (a file saved as Windows-1252, say) are errors of
  their lines; the rows that are plain ASCII still import.
- The job is created before the body is received, so the user's limit of
  queued + running jobs (`too_many_jobs`) also bounds their uploads in
  flight; an upload that does not complete fails its job (`upload_failed`),
  no event sent (its client never got the job id).
- A job that cannot run (no `name` column, an empty file, a header that is
  not UTF-8 or too long, the upload gone) ends `failed` with `error: {code, message}` on the
  job, and still sends `import:done`, so a client waiting for it is never
  left hanging: `{jobId, saved, updated, errors, error: {code, message}}`,
  where a header problem is also listed as an error of line 1. Rows saved
  before a failure stay saved.
- The uploaded file is deleted when the job settles (done, failed, or given
  up after retries), not between retries.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from pydantic import ValidationError

from leadstream.errors import field_errors, field_summary
from leadstream.realtime.emitter import Emitter
from leadstream.server.jobs.exports import FORMULA_STARTS
from leadstream.server.jobs.queue import JobFailed, JobQueue, create_limited_job, job_ref, load_job
from leadstream.server.lead_fields import LeadCreate
from leadstream.store.base import Store
from leadstream.store.records import Job, LeadInput

log = logging.getLogger(__name__)

SOURCE = "import"
# Header names (lower-cased, trimmed) and the lead field each fills.
COLUMNS = {
    "name": "name",
    "title": "title",
    "company": "company",
    "industry": "industry",
    "location": "location",
    "linkedin": "linkedin",
    "email": "emails",
    "emails": "emails",
    "phone": "phones",
    "phones": "phones",
    "tags": "tags",
}
LIST_FIELDS = frozenset({"emails", "phones", "tags"})
SEPARATOR = ";"
READ_CHUNK = 64 * 1024
HEADER_ERRORS = ("missing_name_column", "invalid_header", "not_utf8", "header_too_long")
# Bytes that are not UTF-8, as the `surrogateescape` decoder leaves them.
NOT_UTF8 = re.compile("[\udc80-\udcff]")
NOT_UTF8_MESSAGE = "is not UTF-8 text; save the file as CSV UTF-8"


class ImportFailed(JobFailed):
    """The file cannot be imported at all (as opposed to a bad row).

    :param tally: what the import did before it failed (rows saved before a
        failure stay saved); set by `ImportService.run`, which raises it again.
    """

    def __init__(self, code: str, message: str, *, tally: Tally | None = None) -> None:
        super().__init__(code, message)
        self.tally = tally


class RowError(Exception):
    """One row cannot be saved; the import goes on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RowTooLong(Exception):
    """Raised by `BoundedLines` into the `csv` reader, which then drops the row."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BoundedLines:
    """The lines of a text file, as `csv.reader` takes them, none longer than
    `max_line` characters and no row (its lines together) longer either.

    An overlong line is read to its end in pieces and dropped; so is the rest
    of its row: the lines up to the one where the row's quotes balance (the
    end of a quoted cell spanning lines). `RowTooLong` is then raised into
    the reader, so the row is dropped and the next one starts clean.

    :param text: the file, as text with line endings kept (`newline=""`).
    :param max_line: characters of a line or row at most, line endings included.
    """

    def __init__(self, text: TextIO, max_line: int) -> None:
        self._text = text
        self.max_line = max_line
        self.line = 0  # lines read so far
        self._row_start = 1
        self._row_chars = 0
        self._row_quotes = 0

    def start_row(self) -> None:
        """The reader is about to read a new row."""
        self._row_start = self.line + 1
        self._row_chars = 0
        self._row_quotes = 0

    def __iter__(self) -> BoundedLines:
        return self

    def __next__(self) -> str:
        piece = self._text.readline(self.max_line + 1)
        if not piece:
            raise StopIteration
        self._row_chars += len(piece)
        self._row_quotes += piece.count('"')
        if len(piece) <= self.max_line and self._row_chars <= self.max_line:
            self.line += 1
            return piece
        if len(piece) > self.max_line:
            self._finish_line(piece)
        self.line += 1
        while self._row_quotes % 2 and self._skip_line():
            pass  # inside a quoted cell: its row goes on
        if self.line == self._row_start:
            raise RowTooLong(f"line longer than {self.max_line:,} characters; skipped")
        raise RowTooLong(
            f"row longer than {self.max_line:,} characters "
            f"(lines {self._row_start}-{self.line}); skipped"
        )

    def _finish_line(self, piece: str) -> bool:
        """Read the rest of the line `piece` began; False at the end of the file."""
        while not piece.endswith(("\n", "\r")):
            piece = self._text.readline(READ_CHUNK)
            if not piece:
                return False
            self._row_quotes += piece.count('"')
        return True

    def _skip_line(self) -> bool:
        """Read one whole line, in pieces; False at the end of the file."""
        piece = self._text.readline(READ_CHUNK)
        if not piece:
            return False
        self._row_quotes += piece.count('"')
        self.line += 1
        return self._finish_line(piece)


@dataclass(slots=True)
class Batch:
    """Rows read from the file since the last batch."""

    items: list[LeadInput] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # {line, message}
    finished: bool = False


class LeadRows:
    """Reads leads from an open CSV file, a batch at a time (blocking: run
    `next_batch` in a thread).

    :param raw: the file, opened in binary mode (its position is the progress).
    :param max_line: characters of a line (or a row of several lines) at most.
    """

    def __init__(self, raw: BinaryIO, *, max_line: int = 64 * 1024) -> None:
        self._raw = raw
        # Bytes that are not UTF-8 are kept (as surrogates) so that only their
        # rows fail; strict: a quote left open is an error, not a field that
        # swallows the rest of the file.
        self._text = io.TextIOWrapper(
            raw, encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
        self._lines = BoundedLines(self._text, max_line)
        self._reader = csv.reader(self._lines, strict=True)
        self._line = 0  # last line of the file read so far
        self._fields: list[str | None] = []

    @property
    def bytes_read(self) -> int:
        return self._raw.tell()

    def read_header(self) -> None:
        """Read line 1 and map its columns.

        :raises ImportFailed: an empty file, a header that is not UTF-8 or
            not CSV, or no `name` column.
        """
        header = self._next_record()
        if header is None:
            raise ImportFailed("empty_file", "the file is empty: expected a header row")
        if isinstance(header, RowTooLong):
            raise ImportFailed(
                "header_too_long",
                f"the header (line 1) is longer than {self._lines.max_line:,} characters; "
                "line 1 must name the columns: name, title, company, email, phone, ...",
            )
        if isinstance(header, str):
            raise ImportFailed("invalid_header", f"line 1 (the header): {header}")
        if any(NOT_UTF8.search(cell) for cell in header):
            raise ImportFailed("not_utf8", f"the header (line 1) {NOT_UTF8_MESSAGE}")
        self._fields = [COLUMNS.get(cell.strip().lower()) for cell in header]
        if "name" not in self._fields:
            found = ", ".join(repr(cell.strip()) for cell in header if cell.strip()) or "none"
            raise ImportFailed(
                "missing_name_column",
                f"the header (line 1) has no name column (columns found: {found}); "
                "name the columns in line 1: name, title, company, email, phone, "
                "linkedin, location, industry, tags",
            )

    def next_batch(self, size: int) -> Batch:
        """Up to `size` rows (valid ones and errors together)."""
        batch = Batch()
        while len(batch.items) + len(batch.errors) < size:
            start = self._line + 1
            record = self._next_record()
            if record is None:
                batch.finished = True
                break
            if isinstance(record, RowTooLong):
                batch.errors.append({"line": start, "message": record.message})
            elif isinstance(record, str):
                batch.errors.append({"line": start, "message": record})
            elif any(cell.strip() for cell in record):
                try:
                    batch.items.append(self._lead(record))
                except RowError as exc:
                    batch.errors.append({"line": start, "message": exc.message})
        return batch

    def _next_record(self) -> list[str] | RowTooLong | str | None:
        """The next record, why it cannot be read, or None at the end."""
        self._lines.start_row()
        try:
            return next(self._reader)
        except StopIteration:
            return None
        except RowTooLong as exc:
            return exc
        except csv.Error as exc:
            return _plain_csv_error(exc)
        finally:
            self._line = self._lines.line

    def _lead(self, record: list[str]) -> LeadInput:
        columns = len(self._fields)
        if len(record) > columns and any(_unescaped(c.strip()) for c in record[columns:]):
            raise RowError(f"the row has {len(record)} cells, the header {columns} columns")
        if any(NOT_UTF8.search(cell) for cell in record):
            raise RowError(f"the row {NOT_UTF8_MESSAGE}")
        data: dict[str, Any] = {}
        for name, cell in zip(self._fields, record, strict=False):
            value = _unescaped(cell.strip())
            if name is None:
                continue
            if name in LIST_FIELDS:
                merged = data.setdefault(name, [])
                for part in value.split(SEPARATOR):
                    part = _unescaped(part.strip())
                    if part and part not in merged:  # Phone + Phones of an export repeat one
                        merged.append(part)
            elif value and name not in data:
                data[name] = value
        data = {key: value for key, value in data.items() if value}
        try:
            body = LeadCreate.model_validate(data)
        except ValidationError as exc:
            raise RowError(field_summary(field_errors(exc), whole="body")) from None
        return body.to_input(SOURCE)


@dataclass(frozen=True, slots=True)
class Upload:
    """An upload being received: its job (queued, not yet submitted) and file."""

    job: Job
    path: Path


@dataclass(slots=True)
class Tally:
    """What an import did so far."""

    saved: int = 0
    updated: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_omitted: int = 0

    @property
    def rows(self) -> int:
        """Data rows read so far: saved, updated and in errors (listed or omitted)."""
        return self.saved + self.updated + len(self.errors) + self.errors_omitted

    def add_errors(self, errors: list[dict[str, Any]], limit: int) -> None:
        room = max(0, limit - len(self.errors))
        self.errors.extend(errors[:room])
        self.errors_omitted += max(0, len(errors) - room)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"saved": self.saved, "updated": self.updated, "errors": self.errors}
        if self.errors_omitted:
            wire["errorsOmitted"] = self.errors_omitted
        return wire


class ImportProgress:
    """Reports how far one import job is: `import:progress` to its user and
    the job's `done` bytes in the store, at most every `interval_s`.

    :param store: where the job record is kept.
    :param emitter: sends `import:progress` to the user who started the job.
    :param job: the job being run.
    :param total_bytes: the size of its file.
    :param interval_s: the least time between two reports (0: after every batch).
    """

    EVENT = "import:progress"

    def __init__(
        self, store: Store, emitter: Emitter, job: Job, *, total_bytes: int, interval_s: float
    ) -> None:
        self._store = store
        self._emitter = emitter
        self._job = job
        self.total_bytes = total_bytes
        self._interval_s = interval_s
        self._last_at: float | None = None  # None: nothing reported yet
        self._last: tuple[int, int] | None = None  # (rows, bytes) of the last report

    async def batch_read(self, rows: int, bytes_read: int) -> None:
        """A batch is done: report it if the interval has passed."""
        now = time.monotonic()
        if self._last_at is not None and now - self._last_at < self._interval_s:
            return
        self._last_at = now
        await self._report(rows, min(bytes_read, self.total_bytes))

    async def finished(self, rows: int) -> None:
        """The whole file is read: report the final counts, unless just said."""
        if self._last != (rows, self.total_bytes):
            await self._report(rows, self.total_bytes)

    async def _report(self, rows: int, bytes_read: int) -> None:
        self._last = (rows, bytes_read)
        job = self._job
        await self._store.update_job(job.id, done=bytes_read)
        await self._emitter.to_user(
            job.org,
            job.user,
            self.EVENT,
            {"jobId": job.id, "rows": rows, "bytes": bytes_read, "totalBytes": self.total_bytes},
        )


class ImportService:
    """Creates import jobs and runs them as the job queue's `import` handler.

    :param store: where leads and job records are kept.
    :param queue: the job queue (in-process or Redis).
    :param emitter: sends `import:progress` and `import:done` to the user who
        started the job.
    :param folder: where uploads are kept until their job settles (shared by
        every worker that may run the job).
    :param batch_size: rows per `upsert_leads` call.
    :param progress_interval_s: the least time between two `import:progress`
        events of a job (0: one after every batch).
    :param max_errors: errors listed in the result at most.
    :param max_line: characters of a CSV line (or a row of several lines) at most.
    :param jobs_per_user: queued + running jobs (imports and exports) a user may have.
    :param on_failure: called when a job fails (metrics).
    """

    KIND = "import"

    def __init__(
        self,
        *,
        store: Store,
        queue: JobQueue,
        emitter: Emitter,
        folder: Path,
        batch_size: int = 1000,
        progress_interval_s: float = 0.25,
        max_errors: int = 1000,
        max_line: int = 64 * 1024,
        jobs_per_user: int = 3,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._emitter = emitter
        self.folder = folder
        self._batch_size = batch_size
        self._progress_interval_s = progress_interval_s
        self._max_errors = max_errors
        self._max_line = max_line
        self._jobs_per_user = jobs_per_user
        self._on_failure = on_failure
        queue.register(self.KIND, self.run, self.give_up)

    def upload_path(self) -> Path:
        """A new, unused path for an upload being received (`.part` until complete)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / f"upload-{secrets.token_hex(12)}.part"

    async def reserve(self, org: str, user: str) -> Upload:
        """Create the job of an upload about to be received (before its body,
        so that the user's job limit bounds their uploads too).

        :raises JobRefused: 429 `too_many_jobs`.
        """
        path = self.upload_path()
        job = await create_limited_job(
            self._store,
            org,
            user,
            self.KIND,
            {"file": path.with_suffix(".csv").name},
            limit=self._jobs_per_user,
        )
        return Upload(job, path)

    async def start(self, upload: Upload) -> str:
        """Queue the import of the complete upload (its file then belongs to
        the job); returns the job id."""
        ready = upload.path.with_suffix(".csv")
        await asyncio.to_thread(upload.path.replace, ready)
        try:
            await self._queue.submit(self.KIND, job_ref(upload.job))
        except BaseException:
            ready.unlink(missing_ok=True)
            raise
        return upload.job.id

    async def abandon(self, upload: Upload) -> None:
        """The upload did not complete (refused, too large, cut off): delete
        it and fail its job, which no one was told of, so no event."""
        await asyncio.to_thread(upload.path.unlink, missing_ok=True)
        error = {"code": "upload_failed", "message": "the upload did not complete"}
        await self._store.update_job(upload.job.id, status="failed", error=error)

    def remove_stale_uploads(self, *, older_than_s: float, now: float | None = None) -> int:
        """Delete uploads no job took (a server stopped while receiving one,
        or before queueing it); returns how many."""
        if not self.folder.exists():
            return 0
        cutoff = (time.time() if now is None else now) - older_than_s
        removed = 0
        for path in self.folder.glob("upload-*"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    async def run(self, ref: str) -> None:
        """The queue's handler: import the file, then report.

        :raises ImportFailed: the file cannot be imported (the queue then
            calls `give_up`); other exceptions are retried.
        """
        job = await load_job(self._store, ref)
        if job is None or job.status in ("done", "failed"):
            return  # settled already (a retry of a job another worker finished)
        path = self.folder / str(job.params.get("file", ""))
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            raise ImportFailed("upload_missing", "the uploaded file is gone") from None
        await self._store.update_job(job.id, status="running", done=0, total=size)
        tally = Tally()
        progress = ImportProgress(
            self._store, self._emitter, job, total_bytes=size, interval_s=self._progress_interval_s
        )
        try:
            await self._import(job, path, tally, progress)
        except ImportFailed as exc:
            raise ImportFailed(exc.code, exc.message, tally=tally) from exc
        await progress.finished(tally.rows)
        result = tally.to_wire()
        await self._store.update_job(job.id, status="done", done=size, total=size, result=result)
        await self._emitter.to_user(job.org, job.user, "import:done", {"jobId": job.id, **result})
        path.unlink(missing_ok=True)

    async def give_up(self, ref: str, failure: JobFailed) -> None:
        """The queue's failure handler: the job failed for good (`ImportFailed`,
        or the queue gave up on it). Its file is deleted."""
        job = await load_job(self._store, ref)
        if job is None:
            return
        tally = Tally()
        if isinstance(failure, ImportFailed):
            tally = failure.tally or tally
            if failure.code in HEADER_ERRORS:
                tally.errors.insert(0, {"line": 1, "message": failure.message})
        if self._on_failure is not None:
            self._on_failure()
        log.warning("import %s failed: %s: %s", job.id, failure.code, failure.message)
        error = failure.to_wire()
        await self._store.update_job(job.id, status="failed", error=error)
        await self._emitter.to_user(
            job.org, job.user, "import:done", {"jobId": job.id, **tally.to_wire(), "error": error}
        )
        (self.folder / str(job.params.get("file", ""))).unlink(missing_ok=True)

    async def _import(self, job: Job, path: Path, tally: Tally, progress: ImportProgress) -> None:
        # Parsing and validating run in a thread, a batch at a time, so the
        # event loop keeps serving while a large file is read. (Parsing the
        # next batch while the store writes this one was measured: no faster,
        # both hold the GIL most of the time.)
        with path.open("rb", buffering=READ_CHUNK) as raw:
            rows = LeadRows(raw, max_line=self._max_line)
            await asyncio.to_thread(rows.read_header)
            finished = False
            while not finished:
                batch = await asyncio.to_thread(rows.next_batch, self._batch_size)
                if batch.items:
                    outcome = await self._store.upsert_leads(job.org, batch.items)
                    tally.saved += outcome.saved
                    tally.updated += len(batch.items) - outcome.saved
                tally.add_errors(batch.errors, self._max_errors)
                finished = batch.finished
                if not finished:  # the last batch is reported by `progress.finished`
                    await progress.batch_read(tally.rows, rows.bytes_read)


def _plain_csv_error(exc: csv.Error) -> str:
    """What is wrong, in plain words, for a `csv` parser error (logged as it is)."""
    text = str(exc)
    log.debug("csv error: %s", text)
    if "expected after" in text:
        what = 'a quoted cell has text after its closing quote (write a quote in a cell as "")'
    elif "unexpected end of data" in text:
        what = "a quoted cell is not closed before the end of the file"
    elif "field larger than field limit" in text:
        what = f"a cell is longer than {csv.field_size_limit():,} characters"
    elif "NUL" in text:
        what = "the line holds a NUL character"
    elif "new-line character" in text:
        what = "a cell holds a line break outside quotes"
    else:
        return "cannot be read as CSV"
    return f"cannot be read as CSV: {what}"


def _unescaped(value: str) -> str:
    """Undo the formula escaping of our exports (`'=...` -> `=...`)."""
    if value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value
