"""Exports and jobs: `POST /api/exports`, `GET /api/jobs/{id}`, downloads.

`POST /api/exports` is refused with 429 `too_many_jobs` when the user has
`LEADSTREAM_JOBS_PER_USER` exports and imports queued or running, and with
409 `export_quota_exceeded` when the org's export files fill
`LEADSTREAM_EXPORT_QUOTA_BYTES` (the message says when space frees up).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from leadstream.agent.tools import ExportFilter, ExportRequest
from leadstream.server.http.appkeys import EXPORTS, STORE
from leadstream.server.http.errors import ApiError
from leadstream.server.http.middleware import PRINCIPAL, principal
from leadstream.server.http.responses import json_response, read_model

routes = web.RouteTableDef()


class ExportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: ExportFilter = ExportFilter()
    format: Literal["csv"] = "csv"


@routes.post("/api/exports")
async def create_export(request: web.Request) -> web.Response:
    who = principal(request)
    body = await read_model(request, ExportBody)
    if body.filter.q is not None:  # refused now (400 query_too_broad), not when the job runs
        request.app[STORE].query_bounds.terms(body.filter.q)
    job_id = await request.app[EXPORTS].start(
        ExportRequest(org=who.org, user=who.user, filter=body.filter.to_lead_filter())
    )
    return json_response({"jobId": job_id}, status=202)


@routes.get("/api/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    who = principal(request)
    job = await request.app[STORE].get_job(who.org, request.match_info["id"])
    if job is None or job.user != who.user:
        raise ApiError(404, "not_found", "no such job")
    return json_response(job.to_wire())


@routes.get("/api/exports/{id}/download")
async def download(request: web.Request) -> web.FileResponse:
    job_id = request.match_info["id"]
    exports = request.app[EXPORTS]
    if PRINCIPAL in request:
        job = await request.app[STORE].get_job(principal(request).org, job_id)
        if job is None or job.user != principal(request).user:
            raise ApiError(404, "not_found", "no such export")
        path = exports.file_path(job.org, job_id)
    elif exports.signer.verify(
        job_id, request.query.get("expires", ""), request.query.get("signature", "")
    ):
        path = await asyncio.to_thread(exports.path, job_id)  # looks through the org folders
    else:
        raise ApiError(403, "forbidden", "the download link is invalid or has expired")
    if not path.exists():
        raise ApiError(404, "not_found", "the export file is not ready or no longer kept")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="leads-{job_id}.csv"',
        },
    )
