"""CORS for the REST API, so the embeddable widget works on other origins.

Only origins listed in `LEADSTREAM_CORS_ORIGINS` get CORS headers (echoed,
never `*`); requests carry bearer tokens, not cookies, so credentials are
not allowed. Preflights are answered here, before auth and rate limits.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type"
EXPOSE_HEADERS = "X-Request-Id, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset"


def cors_middleware(origins: tuple[str, ...]) -> Middleware:
    """Answers CORS for `/api/` requests from `origins`: preflights here, the
    `Access-Control-*` headers on every other response. Outside everything
    but the request id, so preflights skip auth and rate limits and error
    and `429` responses carry the headers too."""
    allowed = frozenset(origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or origin not in allowed or not request.path.startswith("/api/"):
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": "600",
                    "Vary": "Origin",
                },
            )
        response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        response.headers.add("Vary", "Origin")
        return response

    return middleware


def socket_origins(extra: tuple[str, ...]) -> Callable[[str | None, dict[str, str]], bool] | None:
    """python-engineio's `cors_allowed_origins`: the server's own origin (as
    its default does, proxy headers included) plus `extra`; None (the
    library's same-origin default) when there is no extra origin."""
    if not extra:
        return None
    allowed = frozenset(extra)

    def is_allowed(origin: str | None, environ: dict[str, str]) -> bool:
        if origin in allowed:
            return True
        host = environ.get("HTTP_X_FORWARDED_HOST") or environ.get("HTTP_HOST", "")
        scheme = environ.get("HTTP_X_FORWARDED_PROTO") or environ.get("wsgi.url_scheme", "http")
        own = f"{scheme.split(',')[0].strip()}://{host.split(',')[0].strip()}"
        return origin == own

    return is_allowed
