"""Lead store at scale (issue 3): one org of 1,000,000 leads plus ten orgs of
100,000, then

- a page of 50 at the start and at depth (row 900,000) for every sort, with
  and without `hasPhone`: p50/p99 and the depth/start ratio;
- search `q` for a company name and for a phone fragment: p50/p99;
- stats; bulk upsert throughput; `changes_since` for 1,000 changes.

Run: python bench/store_bench.py [--big 1000000] [--small 100000] [--orgs 10]
     [--store sqlite:///PATH | mongodb://...]   (default: a temporary SQLite file)
     [--upsert-only]   (just the bulk upsert into the big org)
     [--mixed]   (the big org also has a lead of another source, "import")
With MONGODB_URI set and no --store, the same figures are printed for MongoDB too.

The bulk upsert matches each new lead against the org's leads (one person,
one lead: `store.lead_identity`): contacts only merge leads of different
sources, so into an org of directory leads alone nothing needs looking up;
`--mixed` gives the org one imported lead first, so every key of every new
lead is looked up (the cost of matching in an org of several sources). To
compare with the store before matching, run this same script on that code:
`PYTHONPATH=DIR` where `DIR/leadstream` is the older tree
(`git archive COMMIT | tar -x -C DIR/leadstream`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from leadstream.store.backends import open_store
from leadstream.store.base import Store
from leadstream.store.cursors import SORTS
from leadstream.store.people_generator import PeopleGenerator
from leadstream.store.records import LeadFilter, LeadInput

BATCH = 5000
ROUNDS = 200


async def fill(store: Store, org: str, count: int, seed: int) -> float:
    """Bulk upsert `count` generated leads; returns leads/s of the store's
    own time (generating the people is not counted)."""
    spent = 0.0
    done = 0  # people upserted so far
    batch: list[LeadInput] = []
    for person in PeopleGenerator(seed).people(count):
        batch.append(LeadInput.from_person(person))
        if len(batch) == BATCH or done + len(batch) == count:
            started = time.perf_counter()
            await store.upsert_leads(org, batch)
            spent += time.perf_counter() - started
            done += len(batch)
            batch = []
    leads = await store.count_leads(org)
    print(f"  {org}: {count:,} people upserted, {leads:,} leads in the org")
    return count / spent


async def timed(call: Callable[[], Awaitable[Any]], rounds: int = ROUNDS) -> list[float]:
    await call()  # warm
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


async def cursor_at(store: Store, org: str, sort: str, depth: int, has_phone: bool) -> str:
    """A cursor positioned after row `depth` (walks pages of 200: setup only)."""
    cursor = None
    walked = 0
    page_filter = LeadFilter(has_phone=has_phone)
    while walked < depth:
        page = await store.list_leads(
            org, sort=sort, limit=min(200, depth - walked), cursor=cursor, filter=page_filter
        )
        walked += len(page.leads)
        cursor = page.next_cursor
        assert cursor is not None, "the org has fewer rows than the depth"
    return cursor


async def bench(
    url: str, big: int, small: int, orgs: int, upsert_only: bool = False, mixed: bool = False
) -> None:
    store = open_store(url, changes_retention_s=7 * 24 * 3600, search_ttl_s=3600)
    await store.open()
    print(f"store: {url.split('@')[-1]}")
    if mixed:
        other = LeadInput("import", "row0", "Someone", emails=("someone@import.example",))
        await store.upsert_leads("big", [other])
    rate = await fill(store, "big", big, seed=1)
    print(f"bulk upsert (1 org, {big:,} leads, batches of {BATCH:,}): {rate:,.0f} leads/s")
    if upsert_only:
        await store.close()
        return
    for n in range(orgs):
        await fill(store, f"org{n}", small, seed=100 + n)
    print(f"filled {orgs} more orgs of {small:,}")

    depth = int(big * 0.9)
    print(
        f"\npage of 50, start vs depth (90% of the rows: {depth:,} unfiltered), {ROUNDS} rounds (ms):"
    )
    print(
        f"{'sort':16} {'hasPhone':8} {'start p50':>9} {'p99':>6} {'depth p50':>9} {'p99':>6} {'ratio':>6}"
    )
    for sort in SORTS:
        for has_phone in (False, True):
            page_filter = LeadFilter(has_phone=has_phone)
            rows = await store.count_leads("big", page_filter)
            deep = await cursor_at(store, "big", sort, int(rows * 0.9), has_phone)
            start = await timed(
                lambda s=sort, f=page_filter: store.list_leads("big", sort=s, limit=50, filter=f)
            )
            at_depth = await timed(
                lambda s=sort, f=page_filter, c=deep: store.list_leads(
                    "big", sort=s, limit=50, cursor=c, filter=f
                )
            )
            ratio = statistics.median(at_depth) / statistics.median(start)
            print(
                f"{sort:16} {has_phone!s:8} {p(start, 0.5):9.2f} {p(start, 0.99):6.2f} "
                f"{p(at_depth, 0.5):9.2f} {p(at_depth, 0.99):6.2f} {ratio:6.2f}"
            )

    phoned = LeadFilter(has_phone=True)
    lead = (await store.list_leads("big", sort="createdAt:asc", limit=1, filter=phoned)).leads[0]
    company_word = lead.company.split()[0]
    phone = "".join(ch for ch in lead.phones[0] if ch.isdigit())[-7:]
    print("\nsearch q (ms):")
    for label, q in (("company name", company_word), ("phone fragment", phone)):
        samples = await timed(lambda q=q: store.list_leads("big", limit=50, filter=LeadFilter(q=q)))
        found = len((await store.list_leads("big", limit=50, filter=LeadFilter(q=q))).leads)
        print(
            f"  {label:15} {q!r:24} p50 {p(samples, 0.5):6.2f}  p99 {p(samples, 0.99):6.2f}  ({found} on the page)"
        )

    stats = await timed(lambda: store.lead_stats("big"))
    print(f"\nstats: p50 {p(stats, 0.5):.3f} ms  p99 {p(stats, 0.99):.3f} ms")
    version = await store.current_version("big")
    since = await timed(lambda: store.changes_since("big", version - 1000, limit=1000), rounds=50)
    print(f"changes_since (1,000 changes): p50 {p(since, 0.5):.1f} ms  p99 {p(since, 0.99):.1f} ms")
    await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--orgs", type=int, default=10)
    parser.add_argument("--store", default=None)
    parser.add_argument("--upsert-only", action="store_true")
    parser.add_argument("--mixed", action="store_true")
    args = parser.parse_args()
    sizes = (args.big, args.small, args.orgs, args.upsert_only, args.mixed)
    if args.store:
        await bench(args.store, *sizes)
        return
    with tempfile.TemporaryDirectory() as folder:
        await bench(f"sqlite:///{Path(folder) / 'bench.db'}", *sizes)
    if os.environ.get("MONGODB_URI"):
        await bench(os.environ["MONGODB_URI"], *sizes)


if __name__ == "__main__":
    asyncio.run(main())
