"""What response compression saves and costs (issue 6): bytes on the wire for a
page of 50 leads from `GET /api/leads` and for the page's static files, as
identity, gzip and brotli, and the time per request of each against identity
in the same run (the app on a local port, the whole middleware chain).

Run: python bench/compression_bench.py [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from leadstream.server.auth import TokenSigner
from leadstream.server.config import Settings
from leadstream.server.http.app import create_app
from leadstream.store.people_generator import PeopleGenerator
from leadstream.store.records import LeadInput
from leadstream.store.sqlite import SqliteStore

SECRET = "bench-secret-not-used-anywhere-else"
ENCODINGS = ("identity", "gzip", "br")
STATIC = Path(__file__).resolve().parent.parent / "static"


async def fill(db: Path) -> None:
    store = SqliteStore(db)
    await store.open()
    leads = [LeadInput.from_person(p) for p in PeopleGenerator(7).people(500)]
    await store.upsert_leads("bench", leads)
    await store.close()


async def transfer(session: aiohttp.ClientSession, url: str, encoding: str, headers: dict) -> int:
    async with session.get(url, headers={**headers, "Accept-Encoding": encoding}) as response:
        assert response.status == 200, (url, response.status)
        assert response.headers.get("Content-Encoding", "identity") == encoding, url
        return len(await response.read())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        await fill(data / "leadstream.db")
        settings = Settings(
            store_url=f"sqlite:///{data / 'leadstream.db'}",
            data_dir=data,
            secret=SECRET,
            people=0,
            rate_limits=dataclasses.replace(Settings().rate_limits, enabled=False),
        )
        token = TokenSigner(SECRET, default_ttl_s=3600).issue("bench", "bench").token
        auth = {"Authorization": f"Bearer {token}"}
        server = TestServer(create_app(settings))
        await server.start_server()
        try:
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                leads = str(server.make_url("/api/leads?limit=50"))
                sizes = {e: await transfer(session, leads, e, auth) for e in ENCODINGS}
                print(
                    "GET /api/leads?limit=50: "
                    + ", ".join(f"{e} {sizes[e] / 1024:.1f} KB" for e in ENCODINGS)
                )
                times: dict[str, list[float]] = {e: [] for e in ENCODINGS}
                for _ in range(args.requests):
                    for encoding in ENCODINGS:  # interleaved: load hits all alike
                        started = time.perf_counter()
                        await transfer(session, leads, encoding, auth)
                        times[encoding].append(time.perf_counter() - started)
                base = statistics.median(times["identity"])
                for encoding in ENCODINGS:
                    p50 = statistics.median(times[encoding])
                    print(f"  {encoding:8} p50 {p50 * 1000:.2f} ms ({p50 / base:.2f}x identity)")
                totals = dict.fromkeys(ENCODINGS, 0)
                page = (STATIC / "index.html").read_text()
                files = ["/", *re.findall(r'(?:src|href)="(/static/[^"]+)"', page)]
                for path in files:
                    url = str(server.make_url(path))
                    for encoding in ENCODINGS:
                        totals[encoding] += await transfer(session, url, encoding, {})
                print(
                    f"the page and the {len(files) - 1} files it loads: "
                    + ", ".join(f"{e} {totals[e] / 1024:.1f} KB" for e in ENCODINGS)
                )
        finally:
            await server.close()


if __name__ == "__main__":
    asyncio.run(main())
