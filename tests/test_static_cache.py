"""Cache headers of the page and the static files, through the app on a real
port: the page names its assets by content-versioned URLs, a versioned
request is cacheable for a year, everything else (the page, widget.js, an
unversioned or outdated URL) is revalidated with its ETag; compression goes
on as before; an edited file gets a new version without a restart."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import aiohttp
import brotli
import pytest
from aiohttp import web

from leadstream.server.http.compression import compression_middleware
from leadstream.server.http.routes.info import STATIC
from leadstream.server.http.static_assets import IMMUTABLE, StaticAssets

YEAR = "public, max-age=31536000, immutable"


@pytest.fixture
async def raw():
    """A client that shows bodies as they travel (no automatic decoding)."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


def version_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def references(text: str) -> dict[str, str | None]:
    """name -> ?v= of each /static/ reference in a page or script."""
    found = re.findall(r"/static/([\w.-]+)(?:\?v=([0-9a-f]+))?[\"'`]", text)
    return {name: version or None for name, version in found}


async def test_the_page_names_every_asset_by_its_content_version(settings, start_server, http):
    server = await start_server(settings)
    response = await http.get(server.make_url("/"))
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["ETag"].startswith('W/"')
    assert response.headers["Content-Type"].startswith("text/html")
    page = await response.text()
    named = references(page)
    source = (STATIC / "index.html").read_text()
    assert set(named) == set(references(source)) >= {"app.js", "chat.css", "socket.io.min.js"}
    for name, version in named.items():
        file = STATIC / name
        assert version == (version_of(file.read_bytes()) if file.is_file() else None), name
    # Versioned, the page is the file otherwise unchanged.
    assert re.sub(r"\?v=[0-9a-f]+", "", page) == source


async def test_versioned_assets_are_immutable_and_others_revalidated(
    settings, start_server, http, raw
):
    server = await start_server(settings)
    page = await (await http.get(server.make_url("/"))).text()
    version = references(page)["chat.js"]
    source = (STATIC / "chat.js").read_bytes()

    current = await raw.get(
        server.make_url(f"/static/chat.js?v={version}"), headers={"Accept-Encoding": "br"}
    )
    assert current.status == 200
    assert current.headers["Cache-Control"] == YEAR == IMMUTABLE
    assert current.headers["Content-Encoding"] == "br"
    assert brotli.decompress(await current.read()) == source
    etag = current.headers["ETag"]
    # A revalidation (after a year, or a forced reload) is still answered 304.
    unchanged = await raw.get(
        server.make_url(f"/static/chat.js?v={version}"),
        headers={"Accept-Encoding": "br", "If-None-Match": etag},
    )
    assert unchanged.status == 304 and unchanged.headers["Cache-Control"] == YEAR

    for url in ("/static/chat.js", "/static/chat.js?v=0123456789abcdef", "/static/chat.js?v="):
        other = await raw.get(server.make_url(url), headers={"Accept-Encoding": "identity"})
        assert other.status == 200, url
        assert other.headers["Cache-Control"] == "no-cache", url
        assert await other.read() == source
        assert "ETag" in other.headers
    plain = await raw.get(server.make_url("/static/chat.js"), headers={"Accept-Encoding": "gzip"})
    revalidated = await raw.get(
        server.make_url("/static/chat.js"),
        headers={"Accept-Encoding": "gzip", "If-None-Match": plain.headers["ETag"]},
    )
    assert revalidated.status == 304 and revalidated.headers["Cache-Control"] == "no-cache"

    missing = await raw.get(server.make_url("/static/nope.js?v=1"))
    assert missing.status == 404 and "immutable" not in missing.headers.get("Cache-Control", "")
    api = await raw.get(server.make_url("/api/info"))
    assert "Cache-Control" not in api.headers


async def test_the_page_revalidates_with_its_etag_compressed_or_not(settings, start_server, raw):
    server = await start_server(settings)
    url = server.make_url("/")
    plain = await raw.get(url, headers={"Accept-Encoding": "identity"})
    body = await plain.read()
    etag = plain.headers["ETag"]
    zipped = await raw.get(url, headers={"Accept-Encoding": "br"})
    assert zipped.headers["Content-Encoding"] == "br"
    assert brotli.decompress(await zipped.read()) == body
    assert "accept-encoding" in zipped.headers["Vary"].lower()
    for accept in ("br", "identity"):
        again = await raw.get(url, headers={"Accept-Encoding": accept, "If-None-Match": etag})
        assert again.status == 304 and await again.read() == b""
        assert again.headers["Cache-Control"] == "no-cache" and again.headers["ETag"] == etag
    stale = await raw.get(url, headers={"If-None-Match": 'W/"0000"'})
    assert stale.status == 200


async def test_widget_js_keeps_its_url_and_loads_versioned_files(settings, start_server, raw):
    server = await start_server(settings)
    for url in ("/static/widget.js", "/static/widget.js?v=anything"):
        response = await raw.get(server.make_url(url), headers={"Accept-Encoding": "identity"})
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["Content-Type"].startswith(
            ("text/javascript", "application/javascript")
        )
    script = (await response.read()).decode()
    named = references(script)
    assert named.pop("widget.js") is None, "its own URL (to find its tag) stays as embedded"
    assert set(named) >= {"socket.io.min.js", "ui.js", "client.js", "chat.js", "chat.css"}
    for name, version in named.items():
        assert version == version_of((STATIC / name).read_bytes()), name
    again = await raw.get(
        server.make_url("/static/widget.js"), headers={"If-None-Match": response.headers["ETag"]}
    )
    assert again.status == 304


async def test_an_edited_file_gets_a_new_version_without_a_restart(tmp_path: Path, serve_app, raw):
    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "index.html").write_text('<script src="/static/a.js"></script><p>/static/a.js</p>')
    (folder / "a.js").write_text("let a = 1;")
    app = web.Application(middlewares=[compression_middleware()])
    StaticAssets(folder).register(app)
    server = await serve_app(app)

    first = await (await raw.get(server.make_url("/"))).text()
    old = version_of(b"let a = 1;")
    assert first == f'<script src="/static/a.js?v={old}"></script><p>/static/a.js</p>'
    (folder / "a.js").write_text("let a = 22;")  # another size: seen whatever the mtime
    second = await (await raw.get(server.make_url("/"))).text()
    new = version_of(b"let a = 22;")
    assert second == f'<script src="/static/a.js?v={new}"></script><p>/static/a.js</p>'
    current = await raw.get(server.make_url(f"/static/a.js?v={new}"))
    assert current.headers["Cache-Control"] == YEAR and await current.read() == b"let a = 22;"
    outdated = await raw.get(server.make_url(f"/static/a.js?v={old}"))
    assert outdated.headers["Cache-Control"] == "no-cache"
    # A file added meanwhile is versioned too; one removed is named as it was.
    (folder / "b.css").write_text("p{}")
    (folder / "index.html").write_text('<link href="/static/b.css"><script src="/static/gone.js">')
    third = await (await raw.get(server.make_url("/"))).text()
    assert third == (
        f'<link href="/static/b.css?v={version_of(b"p{}")}"><script src="/static/gone.js">'
    )


def test_the_package_static_folder_is_versioned_at_start_up(tmp_path: Path):
    copy = tmp_path / "static"
    shutil.copytree(Path(str(STATIC)), copy)
    assets = StaticAssets(copy)
    assert assets.version("app.js") == version_of((copy / "app.js").read_bytes())
    assert assets.version("widget.js") is None, "embedded by a fixed URL"
    assert assets.version("../pyproject.toml") is None
    assert assets.version("nope.js") is None
    assert assets.url("app.js").startswith("/static/app.js?v=")
    assert assets.url("widget.js") == "/static/widget.js"
