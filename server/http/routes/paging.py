"""Query parameters shared by list endpoints."""

from __future__ import annotations

from aiohttp import web

from leadstream.server.http.errors import ApiError

MAX_PAGE = 200


def page_limit(request: web.Request, *, default: int) -> int:
    """`limit` from the query: 1..200, or a 400."""
    raw = request.query.get("limit")
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_limit", "limit must be an integer from 1 to 200") from None
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, "invalid_limit", "limit must be an integer from 1 to 200")
    return limit


def flag(request: web.Request, name: str) -> bool:
    """A boolean filter: `true` or `false` (absent means false), or a 400."""
    raw = request.query.get(name)
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise ApiError(400, "invalid_filter", f"{name} must be true or false")
