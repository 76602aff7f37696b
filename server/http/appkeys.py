"""Typed keys of what lives on the aiohttp application."""

from __future__ import annotations

from typing import TYPE_CHECKING

import socketio
from aiohttp import web

from leadstream.server.auth import TokenSigner
from leadstream.server.config import Settings
from leadstream.store.base import Store

if TYPE_CHECKING:
    from leadstream.server.http.page_cache import PageCache
    from leadstream.server.http.readiness import Readiness
    from leadstream.server.jobs.exports import ExportService
    from leadstream.server.jobs.imports import ImportService
    from leadstream.server.metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
SIGNER = web.AppKey("signer", TokenSigner)
SIO = web.AppKey("sio", socketio.AsyncServer)
EXPORTS: web.AppKey[ExportService] = web.AppKey("exports")
IMPORTS: web.AppKey[ImportService] = web.AppKey("imports")
# What /api/info and the widget show: {"model": ..., "provider": ...}
LABELS = web.AppKey("labels", dict[str, str])
PAGE_CACHE: web.AppKey[PageCache] = web.AppKey("page_cache")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
READINESS: web.AppKey[Readiness] = web.AppKey("readiness")
