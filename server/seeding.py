"""Filling the local people directory (`leadstream seed`, and `serve` on first start)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from leadstream.store.base import Store
from leadstream.store.people_generator import PeopleGenerator
from leadstream.store.records import Person

log = logging.getLogger(__name__)
BATCH = 20_000


async def seed_directory(
    store: Store, people: int, *, seed: int = 42, progress: Callable[[int, int], None] | None = None
) -> int:
    """Make the directory hold (at least) the first `people` people of `seed`.

    Safe to run again: people already there are kept, missing ones added.
    Returns how many were added.
    """
    present = await store.count_people()
    if present >= people:
        return 0
    started = time.perf_counter()
    added = 0
    done = 0
    batch: list[Person] = []
    for person in PeopleGenerator(seed).people(people):
        batch.append(person)
        if len(batch) == BATCH:
            added += await store.add_people(batch)
            done += len(batch)
            batch = []
            if progress:
                progress(done, people)
    if batch:
        added += await store.add_people(batch)
        if progress:
            progress(people, people)
    log.info("directory: added %d people in %.1fs", added, time.perf_counter() - started)
    return added
