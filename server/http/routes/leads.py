"""`/api/leads`: list (keyset pages, filters, sorts), stats, and CRUD."""

from __future__ import annotations

from dataclasses import asdict

import orjson
from aiohttp import web

from leadstream.server.http.appkeys import METRICS, PAGE_CACHE, STORE
from leadstream.server.http.errors import ApiError
from leadstream.server.http.middleware import principal
from leadstream.server.http.page_cache import page_key
from leadstream.server.http.responses import json_response, read_model
from leadstream.server.http.routes.paging import flag, page_limit
from leadstream.server.lead_fields import LeadCreate, LeadFields
from leadstream.store.cursors import SORTS
from leadstream.store.lead_search import search_key
from leadstream.store.records import LeadFilter

routes = web.RouteTableDef()

MANUAL_SOURCE = "manual"


def lead_filter(request: web.Request) -> LeadFilter:
    q = request.query.get("q") or None
    company = request.query.get("company") or None
    tag = request.query.get("tag") or None
    for name, value in (("q", q), ("company", company), ("tag", tag)):
        if value is not None and len(value) > 200:
            raise ApiError(400, "invalid_filter", f"{name} is longer than 200 characters")
    return LeadFilter(
        has_phone=flag(request, "hasPhone"),
        has_email=flag(request, "hasEmail"),
        q=q,
        company=company,
        tag=tag,
    )


def page_query(sort: str, limit: int, cursor: str | None, lead_filter_: LeadFilter) -> str:
    """What a list page's cache key says about the request: one spelling per
    answer, so "Acme!!", "acme" and " ACME " (and "ada lov" and "lov ada")
    share one entry instead of each taking its own."""
    filter_ = asdict(lead_filter_)
    if lead_filter_.q is not None:
        filter_["q"] = search_key(lead_filter_.q)
    if lead_filter_.company is not None:
        filter_["company"] = lead_filter_.company.casefold()  # matched case-insensitively
    return orjson.dumps([sort, limit, cursor, filter_]).decode()


@routes.get("/api/leads")
async def list_leads(request: web.Request) -> web.Response:
    who = principal(request)
    sort = request.query.get("sort", "createdAt:desc")
    if sort not in SORTS:
        raise ApiError(400, "invalid_sort", f"sort must be one of {', '.join(SORTS)}")
    limit = page_limit(request, default=50)
    lead_filter_ = lead_filter(request)
    cursor = request.query.get("cursor")
    store, cache = request.app[STORE], request.app[PAGE_CACHE]
    query = page_query(sort, limit, cursor, lead_filter_)
    cached = await cache.get(page_key(who.org, await store.current_version(who.org), query))
    if cached is not None:
        request.app[METRICS].cache_hit("lead_pages")
        return web.Response(body=cached, content_type="application/json")
    request.app[METRICS].cache_miss("lead_pages")
    page = await store.list_leads(
        who.org, sort=sort, limit=limit, cursor=cursor, filter=lead_filter_
    )
    body = orjson.dumps(
        {
            "leads": [lead.to_wire() for lead in page.leads],
            "nextCursor": page.next_cursor,
            "version": page.version,
        }
    )
    await cache.set(page_key(who.org, page.version, query), body)
    return web.Response(body=body, content_type="application/json")


@routes.get("/api/leads/stats")
async def lead_stats(request: web.Request) -> web.Response:
    stats = await request.app[STORE].lead_stats(principal(request).org)
    return json_response(stats.to_wire())


@routes.post("/api/leads")
async def create_lead(request: web.Request) -> web.Response:
    who = principal(request)
    body = await read_model(request, LeadCreate)
    item = body.to_input(MANUAL_SOURCE)
    result = await request.app[STORE].upsert_leads(who.org, [item])
    return json_response(result.leads[0].to_wire(), status=201 if result.saved else 200)


@routes.get("/api/leads/{id}")
async def get_lead(request: web.Request) -> web.Response:
    lead = await request.app[STORE].get_lead(principal(request).org, request.match_info["id"])
    if lead is None:
        raise ApiError(404, "not_found", "no such lead")
    return json_response(lead.to_wire())


@routes.patch("/api/leads/{id}")
async def patch_lead(request: web.Request) -> web.Response:
    body = await read_model(request, LeadFields)
    fields = body.model_dump(exclude_unset=True)
    if fields.get("name", "") is None:
        raise ApiError(422, "invalid_fields", "name: must not be null")
    lead = await request.app[STORE].update_lead(
        principal(request).org, request.match_info["id"], fields
    )
    if lead is None:
        raise ApiError(404, "not_found", "no such lead")
    return json_response(lead.to_wire())


@routes.delete("/api/leads/{id}")
async def delete_lead(request: web.Request) -> web.Response:
    deleted = await request.app[STORE].delete_lead(principal(request).org, request.match_info["id"])
    if not deleted:
        raise ApiError(404, "not_found", "no such lead")
    return web.Response(status=204)
