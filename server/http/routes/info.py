"""Public endpoints: `/api/info`, `/healthz`, `/readyz` (the web page and the
static files: `server/http/static_assets.py`)."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from leadstream import __version__
from leadstream.server.http.appkeys import LABELS, READINESS, SETTINGS, STORE
from leadstream.server.http.responses import json_response

routes = web.RouteTableDef()
STATIC = resources.files("leadstream") / "static"


@routes.get("/api/info")
async def info(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return json_response(
        {
            "name": "leadstream",
            "version": __version__,
            "protocol": 2,
            "store": request.app[STORE].backend,
            "model": request.app[LABELS]["model"],
            "provider": request.app[LABELS]["provider"],
            "redis": settings.redis_url is not None,
        }
    )


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    ready, checks = await request.app[READINESS].report()
    return json_response(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )
