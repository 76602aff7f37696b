"""Public endpoints: `/api/info`, `/healthz`, `/readyz`, and the web page."""

from __future__ import annotations

import logging
from importlib import resources

import redis.asyncio as aioredis
from aiohttp import web

from leadstream import __version__
from leadstream.server.appkeys import LABELS, SETTINGS, STORE
from leadstream.server.responses import json_response

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
STATIC = resources.files("leadstream") / "static"


@routes.get("/api/info")
async def info(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return json_response(
        {
            "name": "leadstream",
            "version": __version__,
            "protocol": 1,
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
    settings = request.app[SETTINGS]
    checks: dict[str, str] = {}
    try:
        await request.app[STORE].ping()
        checks["store"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported in the answer and the log
        log.warning("readiness: store failed: %s", exc)
        checks["store"] = f"failed: {exc}"
    if settings.redis_url:
        client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=2)
        try:
            await client.ping()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported in the answer and the log
            log.warning("readiness: redis failed: %s", exc)
            checks["redis"] = f"failed: {exc}"
        finally:
            await client.aclose()
    checks["model"] = "ok"  # the offline planner needs nothing; an LLM is checked per call
    ready = all(value == "ok" for value in checks.values())
    return json_response(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )


@routes.get("/")
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(str(STATIC / "index.html"))
