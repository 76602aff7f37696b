"""Typed keys of what lives on the aiohttp application."""

from __future__ import annotations

from typing import TYPE_CHECKING

import socketio
from aiohttp import web

from leadstream.server.auth import TokenSigner
from leadstream.server.config import Settings
from leadstream.store.base import Store

if TYPE_CHECKING:
    from leadstream.server.exports import ExportService
    from leadstream.server.imports import ImportService
    from leadstream.server.metrics import Metrics
    from leadstream.server.page_cache import PageCache
    from leadstream.server.readiness import Readiness

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
