"""`POST /api/leads/import`: receive a CSV file and queue its import job.

The body (`text/csv`, or the file part of `multipart/form-data`) is written
to the import folder chunk by chunk, never held in memory; an upload larger
than `LEADSTREAM_MAX_UPLOAD` is refused with `413` as soon as it is known
to be (from `Content-Length`, else once that many bytes arrived) and its
partial file deleted. The job is created before the body is read: a user
with `LEADSTREAM_JOBS_PER_USER` exports and imports queued or running gets
429 `too_many_jobs` without the body being received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import BinaryIO

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from leadstream.server.http.appkeys import IMPORTS, SETTINGS
from leadstream.server.http.errors import ApiError
from leadstream.server.http.middleware import principal
from leadstream.server.http.responses import json_response

routes = web.RouteTableDef()

CSV_TYPES = frozenset({"text/csv", "application/csv"})
MULTIPART = "multipart/form-data"
FILE_FIELD = "file"
CHUNK = 64 * 1024


@routes.post("/api/leads/import")
async def import_leads(request: web.Request) -> web.Response:
    who = principal(request)
    limit = request.app[SETTINGS].max_upload
    if request.content_type not in CSV_TYPES and request.content_type != MULTIPART:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the CSV file as a text/csv body or as the 'file' field of multipart/form-data",
        )
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    service = request.app[IMPORTS]
    upload = await service.reserve(who.org, who.user)  # 429 too_many_jobs: before the body
    try:
        chunks = _csv_body(request) if request.content_type in CSV_TYPES else _file_part(request)
        size = await _save(chunks, upload.path, limit)
        if size == 0:
            raise ApiError(400, "empty_body", "the CSV file is empty")
        job_id = await service.start(upload)
    except BaseException:
        await service.abandon(upload)
        raise
    return json_response({"jobId": job_id}, status=202)


async def _csv_body(request: web.Request) -> AsyncGenerator[bytes, None]:
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


async def _file_part(request: web.Request) -> AsyncGenerator[bytes, None]:
    """The bytes of the `file` field (or of the first part that is a file).

    :raises ApiError: 400 when the body is not the multipart it says it is.
    """
    try:
        async for chunk in _parts(request):
            yield chunk
    except (ValueError, HttpProcessingError) as exc:  # a missing boundary, bad part headers
        raise ApiError(
            400, "invalid_multipart", f"the multipart body cannot be read: {exc}"
        ) from None


async def _parts(request: web.Request) -> AsyncGenerator[bytes, None]:
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue  # a nested multipart: not ours
        if part.name == FILE_FIELD or part.filename is not None:
            while chunk := await part.read_chunk(CHUNK):
                yield chunk
            return
        await part.release()
    raise ApiError(400, "missing_file", "the multipart body has no 'file' field")


async def _save(chunks: AsyncGenerator[bytes, None], path: Path, limit: int) -> int:
    """Write `chunks` to `path`; returns the size.

    :raises ApiError: 413 once more than `limit` bytes arrived.
    """
    size = 0
    out: BinaryIO = await asyncio.to_thread(path.open, "wb")
    try:
        async with aclosing(chunks):
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                out.write(chunk)  # a page-cache write of 64 KB at most: no thread needed
    finally:
        out.close()
    return size


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        f"the upload is larger than the limit of {limit:,} bytes",
        {"maxBytes": limit},
    )
