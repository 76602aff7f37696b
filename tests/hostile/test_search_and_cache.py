"""Search and the page cache under attack (issue 10, items 3, 4 and 9):
lists that differ only in how `q` is spelled, queries that would match
every lead, and searches that would store rows without end.

Bounds stated here: the server grows by less than `CACHE_GROWTH_BOUND`
during 600 spellings of one query; another org's stats answer within
`VICTIM_BUDGET_S` while four clients send broad queries; an org's stored
search rows never exceed `LEADSTREAM_SEARCH_ROWS_QUOTA`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import aiohttp
from hostile_support import Target
from support import Scrape, connect_client

from leadstream.store.records import LeadInput
from leadstream.store.sqlite import SqliteStore, sqlite_path

CACHE_GROWTH_BOUND = 40 * 1024 * 1024
VICTIM_BUDGET_S = 0.1
QUOTA = 300
# What is measured is the cost of each request, so rate limits (another bound) are off.
UNLIMITED = {"LEADSTREAM_RATE_LIMITS": "off"}


def store_path(target: Target) -> Path:
    return sqlite_path(target.server.env["LEADSTREAM_STORE"])


async def seed(target: Target, org: str, count: int, **fields: str) -> None:
    """Leads written straight into the server's database (as a second
    process sharing the file would), so seeding costs seconds, not minutes."""
    store = SqliteStore(store_path(target))
    await store.open()
    try:
        for start in range(0, count, 5000):
            await store.upsert_leads(
                org,
                [
                    LeadInput(
                        source="seed",
                        person_id=f"p{i}",
                        name=f"Person{i} Example",
                        company=fields.get("company", f"Company {i % 97}"),
                        title="Head of Partnerships and Strategic Alliances, EMEA",
                        emails=(f"person{i}@example.com",),
                        phones=(f"+1 415 555 {i % 10000:04d}",),
                        location="San Francisco, California, United States",
                        industry="software",
                    )
                    for i in range(start, min(count, start + 5000))
                ],
            )
    finally:
        await store.close()


async def page_cache_hits(http: aiohttp.ClientSession, target: Target) -> float:
    scrape = await Scrape.of(http, target.url + "/metrics")
    return scrape.value("leadstream_cache_hits_total", cache="lead_pages")


async def test_one_query_spelled_600_ways_is_cached_once(start_target) -> None:
    target = await start_target(**UNLIMITED)
    await seed(target, "victim", 200, company="Acme Rockets")
    async with aiohttp.ClientSession() as http:
        url = target.url + "/api/leads"
        headers = target.headers("victim")

        async def listing(q: str) -> bytes:
            params = {"q": q, "limit": "200"}
            async with http.get(url, params=params, headers=headers) as response:
                assert response.status == 200, await response.text()
                return await response.read()

        first = await listing("acme rockets")  # also warms the code paths before measuring
        before_rss, before_hits = target.rss(), await page_cache_hits(http, target)
        spellings = [
            ("ACME" if i % 2 else "Acme")
            + "!?.,;:"[i % 6] * (1 + i % 40)
            + " " * (1 + i // 40)
            + ("rockets" if i % 3 else "ROCKETS acme ac rock")
            for i in range(600)
        ]
        assert len(set(spellings)) == 600
        async with target.probe() as probe:
            for start in range(0, 600, 20):
                pages = await asyncio.gather(*(listing(q) for q in spellings[start : start + 20]))
                assert set(pages) == {first}
        probe.assert_healthy()
        growth = target.rss() - before_rss
        assert growth < CACHE_GROWTH_BOUND, f"grew {growth / 2**20:.0f} MB"
        # One page in the cache answered every spelling: no list reached the store again.
        assert await page_cache_hits(http, target) - before_hits == 600
        async with http.get(url + "/stats", headers=headers) as response:
            assert (await response.json())["total"] == 200  # nothing stored was lost


BROAD_QUERIES = [
    "0 1 2 3 4 5 6 7 8 9",
    "a",
    "e e e e",
    " ".join(f"word{i}" for i in range(30)),
    "x" * 2000,
    "pe",  # allowed (2 characters) and cheap: the org has no leads
    "person example",
]


async def test_broad_queries_of_one_org_do_not_slow_another(start_target) -> None:
    target = await start_target(**UNLIMITED)
    await seed(target, "big", 30_000)  # the full-text index spans every org
    await seed(target, "victim", 50, company="Victim Corp")
    async with aiohttp.ClientSession() as http:
        attacker, victim = target.headers("empty"), target.headers("victim")
        answers: list[tuple[str, int, str]] = []
        victim_times: list[float] = []
        stop = asyncio.Event()

        async def attack() -> None:
            while not stop.is_set():
                for q in BROAD_QUERIES:
                    async with http.get(
                        target.url + "/api/leads", params={"q": q}, headers=attacker
                    ) as response:
                        body = await response.json()
                        answers.append((q, response.status, body.get("error", {}).get("code", "")))

        async def watch_victim() -> None:
            while not stop.is_set():
                for path, params in (("/api/leads/stats", {}), ("/api/leads", {"q": "person1"})):
                    started = time.perf_counter()
                    async with http.get(
                        target.url + path, params=params, headers=victim
                    ) as response:
                        assert response.status == 200, await response.text()
                        body = await response.json()
                    victim_times.append(time.perf_counter() - started)
                    if path.endswith("stats"):
                        assert body["total"] == 50
                    else:
                        assert {lead["company"] for lead in body["leads"]} == {"Victim Corp"}
                await asyncio.sleep(0.02)

        async with target.probe() as probe:
            tasks = [asyncio.create_task(attack()) for _ in range(4)]
            tasks.append(asyncio.create_task(watch_victim()))
            await asyncio.sleep(3)
            stop.set()
            await asyncio.gather(*tasks)
        probe.assert_healthy()

    refused = {q: (status, code) for q, status, code in answers if status != 200}
    assert {q for q, _, _ in answers} == set(BROAD_QUERIES)
    for q in BROAD_QUERIES[:4]:
        assert refused[q] == (400, "query_too_broad"), q
    assert refused["x" * 2000] == (400, "invalid_filter")  # q is at most 200 characters
    assert {status for q, status, _ in answers if q in ("pe", "person example")} == {200}
    assert len(victim_times) >= 10
    assert max(victim_times) < VICTIM_BUDGET_S, f"worst {max(victim_times) * 1000:.0f} ms"


async def test_stored_search_rows_stay_within_the_quota(start_target) -> None:
    target = await start_target(
        LEADSTREAM_SEARCH_ROWS_QUOTA=str(QUOTA), LEADSTREAM_DAILY_CREDITS="0"
    )
    events = ("chat:tool", "leads:batch", "chat:done", "chat:error", "chat:delta")
    client = await connect_client(target.url, {"token": target.token("victim")}, events)
    log = client.log
    try:
        conversations = []
        async with target.probe() as probe:
            for _ in range(8):  # 8 x 100 rows, over a quota of 300
                done = await client.chat("Find 100 CTOs in fintech with phone numbers")
                conversations.append(done["ack"]["conversationId"])
        probe.assert_healthy()
        search_ids = [b["searchId"] for b in log.of("leads:batch") if b["done"]]
        assert len(search_ids) == 8
        db = sqlite3.connect(f"file:{store_path(target)}?mode=ro", uri=True)
        try:
            stored = dict(
                db.execute("SELECT id, row_count FROM searches WHERE org = 'victim'").fetchall()
            )
        finally:
            db.close()
        assert 0 < sum(stored.values()) <= QUOTA
        assert search_ids[-1] in stored and search_ids[0] not in stored  # the oldest went
        # The newest search still saves; the dropped one answers "unknown or expired".
        await client.chat("save them", conversations[-1])
        await client.chat("save them", conversations[0])
        results = [
            t for t in log.of("chat:tool") if t["name"] == "save_leads" and t["status"] != "started"
        ]
        assert results[0]["status"] == "done", results[0]
        assert results[1]["status"] == "error", results[1]
        assert results[1]["error"]["code"] == "unknown_search", results[1]
    finally:
        await client.sio.disconnect()
