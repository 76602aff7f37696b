"""The SQLite store on real files: upserts, versions, stats, change log, directory."""

from __future__ import annotations

import asyncio

import pytest

from leadstream.server.seeding import seed_directory
from leadstream.store.people_generator import PeopleGenerator
from leadstream.store.records import LeadInput, PeopleQuery
from leadstream.store.sqlite import SqliteStore
from leadstream.store.titles import title_words


@pytest.fixture
async def store(tmp_path):
    store = SqliteStore(tmp_path / "db" / "leadstream.db")
    await store.open()
    yield store
    await store.close()


def item(i: int, **fields) -> LeadInput:
    base = {"source": "test", "person_id": f"p{i}", "name": f"Person {i}"}
    return LeadInput(**(base | fields))


async def test_upsert_never_duplicates_and_counts(store):
    first = await store.upsert_leads("acme", [item(i, emails=("a@b.example",)) for i in range(10)])
    assert (first.saved, first.updated, first.unchanged) == (10, 0, 0)
    again = await store.upsert_leads(
        "acme",
        [item(i, emails=("a@b.example",)) for i in range(10)] + [item(3, phones=("+1 555 0100",))],
    )
    assert (again.saved, again.updated, again.unchanged) == (0, 1, 9)
    assert await store.count_leads("acme") == 10
    stats = await store.lead_stats("acme")
    assert (stats.total, stats.with_email, stats.with_phone, stats.with_both) == (10, 10, 1, 1)
    assert [c.version for c in first.changes + again.changes] == list(range(1, 12))
    assert await store.current_version("acme") == 11
    assert await store.current_version("globex") == 0


async def test_stats_follow_updates_and_deletes(store):
    result = await store.upsert_leads(
        "acme", [item(1, emails=("x@y.example",), phones=("+1 555 0100",))]
    )
    lead_id = result.leads[0].id
    await store.update_lead("acme", lead_id, {"phones": []})
    stats = await store.lead_stats("acme")
    assert (stats.total, stats.with_email, stats.with_phone, stats.with_both) == (1, 1, 0, 0)
    assert await store.delete_lead("acme", lead_id)
    assert (await store.lead_stats("acme")).total == 0
    assert not await store.delete_lead("acme", lead_id)
    log = await store.changes_since("acme", 0)
    assert [(c.version, c.op) for c in log.changes] == [(1, "insert"), (2, "update"), (3, "delete")]
    assert log.changes[2].lead is None and log.changes[1].lead.phones == ()


async def test_listeners_get_commits_in_version_order(store):
    seen: list[int] = []
    store.subscribe_changes(lambda changes: seen.extend(c.version for c in changes))
    await asyncio.gather(*(store.upsert_leads("acme", [item(i)]) for i in range(50)))
    await asyncio.sleep(0.05)
    assert seen == list(range(1, 51))


async def test_two_stores_on_one_file_share_versions(tmp_path):
    """Several server processes may share the file: versions stay consecutive."""
    path = tmp_path / "shared.db"
    first, second = SqliteStore(path), SqliteStore(path)
    await first.open()
    await second.open()
    try:
        await asyncio.gather(
            *(s.upsert_leads("acme", [item(i)]) for i, s in enumerate([first, second] * 20))
        )
        log = await first.changes_since("acme", 0)
        assert [c.version for c in log.changes] == list(range(1, 41))
        assert (await second.lead_stats("acme")).total == 40
    finally:
        await first.close()
        await second.close()


async def test_search_sets_expire(tmp_path):
    store = SqliteStore(tmp_path / "db.sqlite", search_ttl_s=-1)
    await store.open()
    try:
        person = next(PeopleGenerator(1).people(1))
        saved = await store.save_search("acme", "alice", None, {"title": "x"}, [person])
        assert await store.get_search("acme", saved.id) is None
    finally:
        await store.close()


async def test_search_sets_belong_to_their_org(store):
    person = next(PeopleGenerator(1).people(1))
    saved = await store.save_search("acme", "alice", None, {}, [person])
    kept = (await store.get_search("acme", saved.id)).people
    assert [p.to_wire() for p in kept] == [person.to_wire()]
    assert await store.get_search("globex", saved.id) is None


def test_generator_is_deterministic_and_realistic():
    first = list(PeopleGenerator(7).people(20_000))
    assert first == list(PeopleGenerator(7).people(20_000))
    assert first[:500] == list(PeopleGenerator(7).people(500)), "growing keeps who is there"
    assert list(PeopleGenerator(8).people(50)) != first[:50]
    share = lambda pred: sum(1 for p in first if pred(p)) / len(first)  # noqa: E731
    assert 0.57 < share(lambda p: p.phones) < 0.63
    assert 0.82 < share(lambda p: p.emails) < 0.88
    assert 0.87 < share(lambda p: p.linkedin) < 0.93
    assert len({p.industry for p in first}) >= 15
    assert len({p.location for p in first}) >= 20
    assert len({p.person_id for p in first}) == len(first)


async def test_seeding_is_idempotent_and_grows(store):
    assert await seed_directory(store, 3000) == 3000
    assert await seed_directory(store, 3000) == 0
    assert await seed_directory(store, 5000) == 2000
    assert await store.count_people() == 5000
    assert await store.get_person("dir00000000") == next(PeopleGenerator(42).people(1))


@pytest.mark.parametrize(
    ("query", "expected_words"),
    [("CTO", {"chief technology officer"}), ("VP Sales", {"vice president", "sales"})],
)
async def test_title_search_understands_abbreviations(store, query, expected_words):
    await seed_directory(store, 20_000)
    pages = [
        page
        async for page in store.stream_people(
            PeopleQuery(title_terms=tuple(title_words(query))), limit=300, chunk_size=50
        )
    ]
    people = [p for page in pages for p in page]
    assert len(pages) >= 2 and len(people) > 50
    for person in people:
        normalized = " ".join(title_words(person.title))
        assert all(words in normalized for words in expected_words), person.title
    # Both spellings are in the directory and both are found.
    if query == "CTO":
        assert {"CTO", "Chief Technology Officer"} <= {p.title for p in people}


async def test_stopping_a_stream_early_releases_the_reader(store):
    await seed_directory(store, 5000)
    async for _page in store.stream_people(PeopleQuery(), limit=5000, chunk_size=10):
        break
    assert await store.count_people() == 5000  # the reader pool is not stuck
