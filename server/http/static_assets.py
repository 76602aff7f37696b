"""The web page and its static files, with cache headers a browser or CDN can
keep: assets under content-versioned URLs are cached for a year, the rest is
revalidated on every use.

When the server sends the page (`/`, from static/index.html) or the
embeddable static/widget.js, each `/static/NAME` reference in it becomes
`/static/NAME?v=VERSION`, VERSION being a hash of the file's bytes:

- a request for `/static/NAME?v=VERSION` with the file's current version is
  answered `Cache-Control: public, max-age=31536000, immutable`;
- any other request for a static file (no version, an old one) gets
  `no-cache`: kept, but revalidated with its ETag (a 304 when unchanged);
- the page and widget.js get `no-cache` always, with an ETag of their own;
  widget.js is embedded by other sites at its fixed URL, so it is never
  versioned, and the files it loads are.

Rewriting when serving, instead of a build step that renames files, keeps
the page plain HTML that anyone can add a `<script src="/static/x.js">` to.
Versions are computed at start-up and again when a file's mtime or size
changes (an edited file in development): a `stat` per static response, a
hash only on change. Compression (server/http/compression.py) applies as before:
files from its cache, the page and widget.js per request (they are small).
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import stat
from collections.abc import Collection
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

from aiohttp import hdrs, web

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
VERSION_CHARS = 16  # of the SHA-256 hex digest: 64 bits
# A file of the (flat) static folder.
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# `/static/NAME` in an attribute or a JavaScript string: right before its closing quote.
REFERENCE = re.compile(r"/static/([A-Za-z0-9][A-Za-z0-9._-]*)(?=[\"'`])")

Stamp = tuple[int, int]  # (mtime in ns, size) of a file


@dataclass(frozen=True, slots=True)
class _Template:
    """A page as read from disk, with the static files it names."""

    stamp: Stamp
    text: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RenderedPage:
    """A page with versioned references, and its ETag (a hash of `body`)."""

    body: bytes
    etag: str
    key: tuple[Stamp, tuple[str | None, ...]]


class StaticAssets:
    """The files of one static folder, their versions and how they are served.

    :param root: the folder (flat: no subfolders are served).
    :param prefix: the URL path the folder is served under.
    :param fixed: files embedded elsewhere by a fixed URL: never versioned.
    """

    def __init__(
        self,
        root: Path | Traversable,
        *,
        prefix: str = "/static",
        fixed: Collection[str] = ("widget.js",),
    ) -> None:
        self.root = Path(str(root))
        self.prefix = prefix.rstrip("/")
        self.fixed = frozenset(fixed)
        self._versions: dict[str, tuple[Stamp, str]] = {}
        self._templates: dict[str, _Template] = {}
        self._pages: dict[str, RenderedPage] = {}
        for path in self.root.iterdir():  # versions known before the first request
            self.version(path.name)

    def version(self, name: str) -> str | None:
        """The content version of the static file `name`; None when there is
        no such file (or it is one of the `fixed` ones)."""
        if name in self.fixed or not FILE_NAME.fullmatch(name):
            return None
        path = self.root / name
        try:
            info = path.stat()
        except OSError:
            self._versions.pop(name, None)
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        stamp = (info.st_mtime_ns, info.st_size)
        known = self._versions.get(name)
        if known is not None and known[0] == stamp:
            return known[1]
        version = hashlib.sha256(path.read_bytes()).hexdigest()[:VERSION_CHARS]
        self._versions[name] = (stamp, version)
        return version

    def url(self, name: str) -> str:
        """The URL path of static file `name`, versioned when it can be."""
        version = self.version(name)
        plain = f"{self.prefix}/{name}"
        return f"{plain}?v={version}" if version else plain

    def cache_control(self, name: str, requested: str | None) -> str:
        """`Cache-Control` for static file `name` asked for with `?v=requested`."""
        if requested is not None and requested == self.version(name):
            return IMMUTABLE
        return REVALIDATE

    def render(self, name: str) -> RenderedPage:
        """The static file `name` (a page, widget.js) with each `/static/NAME`
        reference to an existing file versioned.

        :raises FileNotFoundError: when there is no such file.
        """
        path = self.root / name
        info = path.stat()
        stamp = (info.st_mtime_ns, info.st_size)
        template = self._templates.get(name)
        if template is None or template.stamp != stamp:
            text = path.read_text("utf-8")
            names = tuple(sorted(set(REFERENCE.findall(text))))
            template = self._templates[name] = _Template(stamp, text, names)
        versions = {ref: self.version(ref) for ref in template.names}
        key = (stamp, tuple(versions.values()))
        page = self._pages.get(name)
        if page is not None and page.key == key:
            return page

        def versioned(match: re.Match[str]) -> str:
            version = versions[match[1]]
            return f"{match[0]}?v={version}" if version else match[0]

        body = REFERENCE.sub(versioned, template.text).encode()
        etag = hashlib.sha256(body).hexdigest()[:VERSION_CHARS]
        page = self._pages[name] = RenderedPage(body, etag, key)
        return page

    # -- serving ---------------------------------------------------------------

    def register(self, app: web.Application) -> None:
        """Serve the page at `/`, widget.js, and the folder under `prefix`,
        each response with its `Cache-Control`."""
        app.router.add_get("/", self._index)
        for name in sorted(self.fixed):
            app.router.add_get(f"{self.prefix}/{name}", self._fixed)
        app.router.add_static(self.prefix, str(self.root))
        app.on_response_prepare.append(self._set_cache_control)

    async def _index(self, request: web.Request) -> web.Response:
        return self._page_response(request, "index.html", "text/html")

    async def _fixed(self, request: web.Request) -> web.Response:
        name = request.path.rpartition("/")[2]
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return self._page_response(request, name, content_type)

    def _page_response(self, request: web.Request, name: str, content_type: str) -> web.Response:
        page = self.render(name)
        # Weak: the compression middleware sends other bytes for the same page.
        headers = {hdrs.ETAG: f'W/"{page.etag}"', hdrs.CACHE_CONTROL: REVALIDATE}
        if any(tag.value in (page.etag, "*") for tag in request.if_none_match or ()):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=page.body, content_type=content_type, charset="utf-8", headers=headers
        )

    async def _set_cache_control(self, request: web.Request, response: web.StreamResponse) -> None:
        """Static files answered 200 or 304 (by the file handler or the
        compression middleware) get their `Cache-Control`; pages set their own."""
        path = request.path
        if not path.startswith(self.prefix + "/") or response.status not in (200, 304):
            return
        if hdrs.CACHE_CONTROL in response.headers:
            return
        name = path[len(self.prefix) + 1 :]
        response.headers[hdrs.CACHE_CONTROL] = self.cache_control(name, request.query.get("v"))
