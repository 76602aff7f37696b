"""The user's conversations and their messages."""

from __future__ import annotations

from aiohttp import web

from leadstream.server.http.appkeys import STORE
from leadstream.server.http.errors import ApiError
from leadstream.server.http.middleware import principal
from leadstream.server.http.responses import json_response
from leadstream.server.http.routes.paging import page_limit

routes = web.RouteTableDef()


@routes.get("/api/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    who = principal(request)
    limit = page_limit(request, default=50)
    items, next_cursor = await request.app[STORE].list_conversations(
        who.org, who.user, limit=limit, cursor=request.query.get("cursor")
    )
    return json_response({"conversations": [c.to_wire() for c in items], "nextCursor": next_cursor})


@routes.get("/api/conversations/{id}/messages")
async def list_messages(request: web.Request) -> web.Response:
    who = principal(request)
    store = request.app[STORE]
    conversation = await store.get_conversation(who.org, request.match_info["id"])
    if conversation is None or conversation.user != who.user:
        raise ApiError(404, "not_found", "no such conversation")
    limit = page_limit(request, default=100)
    items, next_cursor = await store.list_messages(
        who.org, conversation.id, limit=limit, cursor=request.query.get("cursor")
    )
    return json_response({"messages": [m.to_wire() for m in items], "nextCursor": next_cursor})
