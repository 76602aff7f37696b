"""Response compression: brotli or gzip for REST bodies and files, where it pays.

A response is compressed when the client accepts an encoding, the body is
larger than `min_size` (smaller ones gain a few bytes at most), its type is
text-like (JSON, CSV, HTML, CSS, JavaScript, SVG...) and nothing encoded it
already. Brotli is preferred when accepted (about 8% smaller than gzip on our
JSON at the same cost, 10-20% on the static files at its best quality); else
gzip. Compressible responses say `Vary: Accept-Encoding`, compressed or not,
so caches keep one copy per encoding. Never compressed: Socket.IO
(`/socket.io/`: engine.io compresses its own polling responses, websockets
use `permessage-deflate`), websocket upgrades, `text/event-stream`, range
requests, `Cache-Control: no-transform`.

The three cases:
- `web.Response` with its body in memory (JSON): gzip through aiohttp's own
  `enable_compression` (which offloads large bodies to a thread); brotli
  with the `brotli` package, since aiohttp 3.14 only decodes brotli.
- Files (`web.FileResponse`: static files, the page, export downloads) up
  to `cached_file_size`: compressed once (the static assets at brotli's
  best quality) and kept in a small in-memory cache keyed by path, mtime and
  size, so an edited file is compressed again; conditional requests
  (`If-None-Match`, `If-Modified-Since`) answer 304 from it. Compressing
  per request at best quality would cost up to 50 ms (socket.io.min.js);
  shipping `.br`/`.gz` siblings would need a build step and a writable
  package folder.
- Larger files (CSV exports): gzip streamed by aiohttp while the file is
  sent, so memory does not grow with the file (brotli is not streamed).

Websocket `permessage-deflate` is not this module's: the Socket.IO transport
negotiates it itself (`LEADSTREAM_WS_COMPRESSION`, realtime/websocket.py;
README "Capacity" has the measurements), so upgrades pass through untouched.

`compression_middleware(ResponseCompression(...))` is the middleware;
`ResponseCompression` holds the settings and the cache of compressed files.
"""

from __future__ import annotations

import asyncio
import gzip
import mimetypes
import os
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path

import brotli  # type: ignore[import-untyped]
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_response import ContentCoding
from multidict import CIMultiDict

BROTLI = "br"
GZIP = "gzip"
COMPRESSIBLE_TYPES = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/xml",
        "application/x-javascript",
        "application/manifest+json",
        "image/svg+xml",
        "application/wasm",
    }
)
NEVER_COMPRESSED = frozenset({"text/event-stream"})
# Bodies this large are compressed in a thread, not on the event loop.
OFFLOAD_SIZE = 256 * 1024


def is_compressible(content_type: str) -> bool:
    """Whether a body of this media type (no parameters) shrinks when compressed."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in NEVER_COMPRESSED:
        return False
    return (
        media.startswith("text/")
        or media in COMPRESSIBLE_TYPES
        or media.endswith(("+json", "+xml"))
    )


def negotiate(accept_encoding: str, offered: tuple[str, ...] = (BROTLI, GZIP)) -> str | None:
    """The first of `offered` the client accepts with the highest weight
    (`Accept-Encoding`, honouring `q=0` as refused and `*` as anything not
    named), else None."""
    weights: dict[str, float] = {}
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.partition(";")
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if coding.strip():
            weights[coding.strip()] = weight
    wildcard = weights.get("*", 0.0)
    best, best_weight = None, 0.0
    for coding in offered:
        weight = weights.get(coding, wildcard)
        if weight > best_weight:  # on a tie the earlier (preferred) one stays
            best, best_weight = coding, weight
    return best


class FileVariants:
    """Compressed copies of files, kept in memory up to `max_bytes` in all
    (least recently used first out).

    Files up to `best_size` (the static assets: 47 KB at most) get brotli's
    best quality, 10-20% smaller than gzip for up to 50 ms once per file;
    larger ones (an export's CSV, fetched once) a quality that costs about
    what gzip does.

    :param max_bytes: the cache's size in compressed bytes.
    :param best_size: files up to this size are compressed at best quality.
    :param gzip_level: gzip's level for files.
    """

    def __init__(
        self, *, max_bytes: int = 16 * 1024 * 1024, best_size: int = 128 * 1024, gzip_level: int = 9
    ) -> None:
        self.max_bytes = max_bytes
        self._best_size = best_size
        self._gzip_level = gzip_level
        self._entries: OrderedDict[tuple[str, int, int, str], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, path: Path, stat: os.stat_result, coding: str) -> bytes:
        """The file compressed with `coding` (blocking: call it in a thread)."""
        key = (str(path), stat.st_mtime_ns, stat.st_size, coding)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                return cached
        data = path.read_bytes()
        if coding == BROTLI:
            quality = 11 if len(data) <= self._best_size else 5
            compressed: bytes = brotli.compress(data, quality=quality)
        else:
            level = self._gzip_level if len(data) <= self._best_size else 6
            compressed = gzip.compress(data, compresslevel=level, mtime=0)
        with self._lock:  # threads of concurrent requests share the cache
            if key not in self._entries:
                self._entries[key] = compressed
                self._size += len(compressed)
            while self._size > self.max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._size -= len(dropped)
        return compressed


class ResponseCompression:
    """What the compression middleware does to a response (see the module docstring).

    :param min_size: bodies up to this many bytes are sent as they are.
    :param brotli_quality: brotli's quality for bodies compressed per
        request (5: gzip's speed, smaller output).
    :param cached_file_size: files up to this size are compressed once and
        cached; larger ones are gzip-streamed.
    :param files: the cache of compressed files [16 MB].
    :param skip_prefixes: paths never compressed here.
    """

    def __init__(
        self,
        *,
        min_size: int = 1024,
        brotli_quality: int = 5,
        cached_file_size: int = 1024 * 1024,
        files: FileVariants | None = None,
        skip_prefixes: tuple[str, ...] = ("/socket.io/",),
    ) -> None:
        self.min_size = min_size
        self.brotli_quality = brotli_quality
        self.cached_file_size = cached_file_size
        self.files = files if files is not None else FileVariants()
        self.skip_prefixes = skip_prefixes

    def skips(self, request: web.Request) -> bool:
        """Whether the request's response is never compressed (Socket.IO, websocket upgrades)."""
        return _is_upgrade(request) or request.path.startswith(self.skip_prefixes)

    async def compress(
        self, request: web.Request, response: web.StreamResponse
    ) -> web.StreamResponse:
        """The response to send: `response` compressed in place, a new
        response (a cached file, a 304), or `response` as it was."""
        if response.prepared or not self._eligible(request, response):
            return response
        # A file: compressed once and cached, or gzip-streamed when large.
        if isinstance(response, web.FileResponse):
            return await self._file(request, response)
        # A stream the handler will write later: left alone.
        if not isinstance(response, web.Response):
            return response
        # A body in memory: compressed now, when it is large and text-like.
        body = response.body
        if not isinstance(body, (bytes, bytearray)) or len(body) <= self.min_size:
            return response
        if not is_compressible(response.content_type):
            return response
        _vary(response)
        await self._body(response, bytes(body), _accepted(request))
        return response

    def _eligible(self, request: web.Request, response: web.StreamResponse) -> bool:
        """What rules compression out whatever the body is."""
        if response.status in (204, 206, 304) or response.status < 200:
            return False
        if hdrs.CONTENT_ENCODING in response.headers or hdrs.RANGE in request.headers:
            return False
        return "no-transform" not in response.headers.get(hdrs.CACHE_CONTROL, "").lower()

    async def _body(self, response: web.Response, body: bytes, coding: str | None) -> None:
        if coding == GZIP:
            response.enable_compression(ContentCoding.gzip)
        elif coding == BROTLI:
            if len(body) > OFFLOAD_SIZE:
                compressed = await asyncio.to_thread(self._brotli, body)
            else:
                compressed = self._brotli(body)
            response.headers.popall(hdrs.CONTENT_LENGTH, None)
            response.body = compressed
            response.headers[hdrs.CONTENT_ENCODING] = BROTLI

    def _brotli(self, body: bytes) -> bytes:
        compressed: bytes = brotli.compress(body, quality=self.brotli_quality)
        return compressed

    async def _file(self, request: web.Request, response: web.FileResponse) -> web.StreamResponse:
        path = response._path  # aiohttp keeps the file's path only here (3.x)
        content_type = response.headers.get(hdrs.CONTENT_TYPE) or (
            mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        )
        if response.status != 200 or not is_compressible(content_type):
            return response
        try:
            stat = await asyncio.to_thread(path.stat)
        except OSError:
            return response  # FileResponse answers the 404 or 403 itself
        if stat.st_size <= self.min_size:
            return response
        _vary(response)
        coding = _accepted(request)
        if coding is None:
            return response
        if stat.st_size > self.cached_file_size:
            if _accepted(request, (GZIP,)):
                response.enable_compression(ContentCoding.gzip)  # streamed by aiohttp
            return response
        etag = f"{stat.st_mtime_ns:x}-{stat.st_size:x}-{coding}"
        headers = CIMultiDict(response.headers)  # Vary and the handler's own headers
        headers.popall(hdrs.CONTENT_LENGTH, None)
        headers[hdrs.CONTENT_TYPE] = content_type
        headers[hdrs.ETAG] = f'"{etag}"'
        headers[hdrs.LAST_MODIFIED] = _http_date(stat.st_mtime)
        if _not_modified(request, etag, stat.st_mtime):
            return web.Response(status=304, headers=headers)
        body = await asyncio.to_thread(self.files.get, path, stat, coding)
        headers[hdrs.CONTENT_ENCODING] = coding
        return web.Response(body=body, headers=headers)


def compression_middleware(compression: ResponseCompression | None = None) -> Middleware:
    """Compresses responses as `compression` says [the defaults]. Outside the
    error middleware (error bodies are compressed too), inside the metrics
    one (its time is measured)."""
    compressor = compression if compression is not None else ResponseCompression()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if compressor.skips(request):
            return await handler(request)
        return await compressor.compress(request, await handler(request))

    return middleware


def _accepted(request: web.Request, offered: tuple[str, ...] = (BROTLI, GZIP)) -> str | None:
    """The request's choice among `offered` (`negotiate`)."""
    return negotiate(request.headers.get(hdrs.ACCEPT_ENCODING, ""), offered)


def _is_upgrade(request: web.Request) -> bool:
    return "websocket" in request.headers.get(hdrs.UPGRADE, "").lower()


def _vary(response: web.StreamResponse) -> None:
    present = ",".join(response.headers.getall(hdrs.VARY, ())).lower()
    if "accept-encoding" not in present and "*" not in present:
        response.headers.add(hdrs.VARY, hdrs.ACCEPT_ENCODING)


def _not_modified(request: web.Request, etag: str, mtime: float) -> bool:
    if_none_match = request.if_none_match
    if if_none_match is not None:
        return any(tag.value in (etag, "*") for tag in if_none_match)
    since = request.if_modified_since
    return since is not None and int(mtime) <= since.timestamp()


def _http_date(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
