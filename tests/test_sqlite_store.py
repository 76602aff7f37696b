"""What only the SQLite backend has: its full-text index (filled once per
batch, not by a per-row trigger) must always match the leads table, also in a
database made before that change."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from leadstream.store.backends import open_store
from leadstream.store.records import LeadFilter, LeadInput, PeopleQuery, Person
from leadstream.store.sqlite import SqliteStore

OLD_INSERT_TRIGGER = """
CREATE TRIGGER leads_fts_insert AFTER INSERT ON leads BEGIN
    INSERT INTO leads_fts (rowid, search_text) VALUES (new.rowid, new.search_text);
END;
"""


def lead(i: int, **fields: object) -> LeadInput:
    return LeadInput(**({"source": "test", "person_id": f"p{i}", "name": f"Person {i}"} | fields))


def assert_index_matches(path: Path) -> None:
    """FTS5's own check of an external-content index against its table (raises
    `database disk image is malformed` on a missing or extra entry)."""
    db = sqlite3.connect(path)
    try:
        db.execute("INSERT INTO leads_fts (leads_fts) VALUES ('integrity-check')")
    finally:
        db.close()


async def names(store: SqliteStore, q: str) -> list[str]:
    page = await store.list_leads("acme", sort="name:asc", filter=LeadFilter(q=q))
    return [found.name for found in page.leads]


async def test_the_search_index_follows_inserts_updates_and_deletes(tmp_path: Path):
    path = tmp_path / "leads.db"
    store = SqliteStore(path)
    await store.open()
    try:
        await store.upsert_leads("acme", [lead(i, company=f"Zeta {i}") for i in range(300)])
        # One batch: new leads, changed ones, a person twice, unchanged ones.
        mixed = [lead(i, company=f"Omega {i}") for i in range(250, 350)]
        result = await store.upsert_leads("acme", [*mixed, lead(340, title="Chief Omega")])
        assert (result.saved, result.updated) == (50, 50)
        await store.upsert_leads("globex", [lead(1, company="Zeta 1")])
        page = await store.list_leads("acme", sort="name:asc", filter=LeadFilter(q="zeta 7"))
        assert page.leads[0].name == "Person 7"
        assert await store.delete_lead("acme", page.leads[0].id)
        assert_index_matches(path)

        assert await names(store, "zeta 7") == [f"Person 7{i}" for i in range(10)]  # 7 deleted
        assert await names(store, "zeta 250") == []  # renamed to Omega
        assert await names(store, "omega 250") == ["Person 250"]
        assert await names(store, "omega 349") == ["Person 349"]  # inserted in the mixed batch
        assert await names(store, "chief omega") == ["Person 340"]
        assert await store.count_leads("acme", LeadFilter(q="zeta")) == 249
    finally:
        await store.close()


async def test_a_database_with_the_old_insert_trigger_is_indexed_once(tmp_path: Path):
    path = tmp_path / "old.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    db = sqlite3.connect(path)
    db.executescript(OLD_INSERT_TRIGGER)  # what a database of an earlier version had
    db.close()

    store = SqliteStore(path)
    await store.open()
    try:
        await store.upsert_leads("acme", [lead(i, company="Kappa") for i in range(20)])
        assert_index_matches(path)
        assert len(await names(store, "kappa")) == 20
    finally:
        await store.close()
    db = sqlite3.connect(path)
    triggers = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    db.close()
    assert "leads_fts_insert" not in triggers


async def test_a_database_from_before_one_person_one_lead_opens_and_matches(tmp_path: Path):
    path = tmp_path / "old.db"
    store = SqliteStore(path)
    await store.open()
    await store.upsert_leads(
        "acme",
        [lead(i, emails=(f"p{i}@x.example",), phones=(f"+1 415 555 {i:04d}",)) for i in range(5)],
    )
    await store.close()
    db = sqlite3.connect(path)  # what a database of an earlier version had
    db.execute("DELETE FROM identity_hashes")
    db.execute("ALTER TABLE leads DROP COLUMN notes")
    db.execute("ALTER TABLE leads DROP COLUMN sources")
    db.commit()
    db.close()

    store = SqliteStore(path)
    await store.open()
    try:
        stored = (await store.list_leads("acme", sort="name:asc")).leads
        assert [(found.notes, found.sources) for found in stored] == [(None, ("test",))] * 5
        again = LeadInput(
            source="import", person_id="row1", name="Person 3", phones=("14155550003",)
        )
        result = await store.upsert_leads("acme", [again])
        assert result.leads[0].id == stored[3].id and result.leads[0].sources == ("test", "import")
        assert await store.count_leads("acme") == 5
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM identity_hashes").fetchone()[0] == 10
    db.close()


async def test_open_store_times_each_call_chunk_and_failure(tmp_path: Path):
    """What `open_store` gives the server: every call, each streamed chunk
    and each failure reports to `on_call`; the backend's attributes show through."""
    calls: list[str] = []
    store = open_store(
        f"sqlite:///{tmp_path / 'timed.db'}",
        changes_retention_s=3600,
        search_ttl_s=60,
        on_call=lambda operation, seconds: calls.append(operation),
    )
    await store.open()
    try:
        people = [Person(f"d{i}", "directory", f"Person {i}", "CTO", "Acme") for i in range(5)]
        assert await store.add_people(people) == 5
        chunks = [c async for c in store.stream_people(PeopleQuery(), limit=5, chunk_size=2)]
        assert [len(chunk) for chunk in chunks] == [2, 2, 1]
        with pytest.raises(ValueError, match="unknown sort"):
            await store.list_leads("acme", sort="nonsense")
        assert store.backend == "sqlite" and store.query_bounds.time_ms > 0
    finally:
        await store.close()
    assert calls == ["add_people", *["stream_people"] * 3, "list_leads"]
