"""Response compression through the app on a real port: brotli and gzip
negotiated, small bodies left alone, `Vary: Accept-Encoding`, static files
from the compressed-file cache (with 304s), large files gzip-streamed, and
websocket `permessage-deflate` switched off on request."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import brotli
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from support import bearer, settings_with

from leadstream.server.http.compression import (
    ResponseCompression,
    compression_middleware,
    negotiate,
)
from leadstream.server.http.routes.info import STATIC


@pytest.fixture
async def raw() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that shows bodies as they travel (no automatic decoding)."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def some_leads(server: TestServer, http, connect, token: str) -> None:
    """Thirty leads, through an import (one request; its end arrives as an event)."""
    client = await connect(server, token)
    rows = "".join(f"Person {i},CTO,Company {i},p{i}@example.com\n" for i in range(30))
    created = await http.post(
        server.make_url("/api/leads/import"),
        data=("name,title,company,email\n" + rows).encode(),
        headers={**bearer(token), "Content-Type": "text/csv"},
    )
    job_id = (await created.json())["jobId"]
    done = await client.log.wait_for("import:done", lambda d: d["jobId"] == job_id)
    assert done["saved"] == 30


def vary(response: aiohttp.ClientResponse) -> str:
    return ",".join(response.headers.getall("Vary", ())).lower()


async def test_json_is_brotli_or_gzip_as_accepted(
    settings, start_server, token, http, raw, connect
):
    server = await start_server(settings)
    await some_leads(server, http, connect, token())
    url = server.make_url("/api/leads?limit=50")
    identity = {**bearer(token()), "Accept-Encoding": "identity"}
    plain = await (await raw.get(url, headers=identity)).read()
    assert len(plain) > 1024

    for accept, coding, decode in (
        ("gzip, deflate, br", "br", brotli.decompress),
        ("br;q=0.5, gzip", "gzip", gzip.decompress),
        ("gzip, br;q=0", "gzip", gzip.decompress),
        ("*", "br", brotli.decompress),
    ):
        response = await raw.get(url, headers={**bearer(token()), "Accept-Encoding": accept})
        body = await response.read()
        assert response.headers["Content-Encoding"] == coding, accept
        assert int(response.headers["Content-Length"]) == len(body) < len(plain) / 2
        assert decode(body) == plain
        assert "accept-encoding" in vary(response)

    unencoded = await raw.get(url, headers=identity)
    assert "Content-Encoding" not in unencoded.headers
    assert await unencoded.read() == plain
    assert "accept-encoding" in vary(unencoded)  # a cache must still tell the variants apart


async def test_small_bodies_and_errors(settings, start_server, token, raw):
    server = await start_server(settings)
    small = await raw.get(server.make_url("/healthz"), headers={"Accept-Encoding": "br, gzip"})
    assert "Content-Encoding" not in small.headers
    assert "accept-encoding" not in vary(small)
    assert await small.json() == {"status": "ok"}
    # An error body goes through the same path (it is small, so left alone too).
    missing = await raw.get(
        server.make_url("/api/leads/nope"), headers={**bearer(token()), "Accept-Encoding": "br"}
    )
    assert missing.status == 404 and "Content-Encoding" not in missing.headers


async def test_static_files_come_compressed_from_the_cache(settings, start_server, raw):
    server = await start_server(settings)
    source = (STATIC / "socket.io.min.js").read_bytes()
    url = server.make_url("/static/socket.io.min.js")

    first = await raw.get(url, headers={"Accept-Encoding": "br"})
    body = await first.read()
    assert first.headers["Content-Encoding"] == "br"
    assert first.headers["Content-Type"].startswith(("application/javascript", "text/javascript"))
    assert brotli.decompress(body) == source and len(body) < len(source) / 3
    assert "accept-encoding" in vary(first)
    etag = first.headers["ETag"]

    again = await raw.get(url, headers={"Accept-Encoding": "br", "If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""

    zipped = await raw.get(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await zipped.read()) == source
    assert zipped.headers["ETag"] != etag  # each encoding is its own variant

    plain = await raw.get(url, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and await plain.read() == source

    page = await raw.get(server.make_url("/"), headers={"Accept-Encoding": "gzip, br"})
    assert page.headers["Content-Encoding"] == "br"
    plain_page = await raw.get(server.make_url("/"), headers={"Accept-Encoding": "identity"})
    # The page as served: its asset references versioned (tests/test_static_cache.py).
    assert brotli.decompress(await page.read()) == await plain_page.read()

    ranged = await raw.get(url, headers={"Accept-Encoding": "br", "Range": "bytes=0-99"})
    assert ranged.status == 206 and "Content-Encoding" not in ranged.headers


async def test_large_files_are_gzip_streamed(tmp_path: Path, serve_app, raw):
    big = tmp_path / "big.csv"
    big.write_text("".join(f"{i},Person {i},p{i}@example.com\n" for i in range(20_000)))

    async def download(request: web.Request) -> web.FileResponse:
        return web.FileResponse(big, headers={"Content-Type": "text/csv; charset=utf-8"})

    app = web.Application(
        middlewares=[compression_middleware(ResponseCompression(cached_file_size=64 * 1024))]
    )
    app.router.add_get("/big.csv", download)
    server = await serve_app(app)
    response = await raw.get(server.make_url("/big.csv"), headers={"Accept-Encoding": "br, gzip"})
    body = await response.read()
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert gzip.decompress(body) == big.read_bytes()
    assert len(body) < big.stat().st_size / 3


@pytest.mark.parametrize("deflate", [True, False])
async def test_websocket_permessage_deflate_can_be_switched_off(
    settings, start_server, token, deflate
):
    server = await start_server(settings_with(settings, ws_compression=deflate))
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            server.make_url("/socket.io/?EIO=4&transport=websocket"), compress=15
        ) as ws,
    ):
        opening = await ws.receive_str()
        assert opening.startswith("0{")  # engine.io's open packet
        assert bool(ws.compress) is deflate


def test_negotiation():
    assert negotiate("gzip, deflate, br") == "br"
    assert negotiate("gzip;q=1.0, br;q=0.8") == "gzip"
    assert negotiate("br;q=0, gzip;q=0") is None
    assert negotiate("deflate") is None
    assert negotiate("") is None
    assert negotiate("*;q=0.1, br;q=0") == "gzip"
    assert negotiate("BR") == "br"
