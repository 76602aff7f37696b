"""The store contract: one suite, run against every backend.

Backends (the `store` fixture's parameters):
- `sqlite`: a real SQLite file in a temporary folder; runs everywhere.
- `mongodb`: lead writes in transactions. Against the server named by
  `MONGODB_URI` when it is set (transactions if it is a replica set or a
  sharded cluster), else against the mongoeco stand-in
  (`tests/mongo_standin.py`), which has transactions.
- `mongodb-standalone`: the same server with transactions off: the path a
  stand-alone MongoDB server takes.

Each test gets its own SQLite file or MongoDB database (dropped afterwards).
A test the stand-in cannot run says why with `@standin_cannot(...)`; it then
runs only on SQLite and on a real server.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from mongo_standin import MongoStandin, standin_python

from leadstream.server.seeding import seed_directory
from leadstream.store.base import Store
from leadstream.store.cursors import SORTS, encode_cursor
from leadstream.store.errors import InvalidCursor, QueryTooBroad
from leadstream.store.lead_search import QueryBounds
from leadstream.store.people_generator import PeopleGenerator
from leadstream.store.records import Lead, LeadFilter, LeadInput, PeopleQuery, Person
from leadstream.store.sqlite import SqliteStore
from leadstream.store.timing import TimedStore
from leadstream.store.titles import title_key, title_words
from leadstream.store.usage import DayUsage

F = TypeVar("F", bound=Callable[..., Any])
BACKENDS = ["sqlite", "mongodb", "mongodb-standalone"]

# -- why the stand-in cannot run some tests (listed in the README) ----------------

SLOW_INSERTS = (
    "mongoeco's wire server inserts the documents of a command one at a time, each "
    "checked against the collection: 1,000 directory people take 5 to 20 s here, so "
    "seeding 3,000 to 20,000 people would take minutes (and a command that keeps its "
    "single event loop busy past PyMongo's heartbeat timeout gets cancelled)"
)
COMMIT_CONFLICTS = (
    "mongoeco checks transactions optimistically against the whole database and "
    "fails a commit that overlapped any other write with an unlabelled 'Write "
    "conflict during transaction commit' error (no TransientTransactionError label), "
    "so PyMongo's with_transaction cannot retry it as it does a real server's WriteConflict"
)


def standin_cannot(
    reason: str, *, backends: tuple[str, ...] = ("mongodb", "mongodb-standalone")
) -> Callable[[F], F]:
    """Mark a contract test that the MongoDB stand-in cannot run on `backends`, and why."""

    def mark(test: F) -> F:
        test.standin_cannot = (reason, backends)  # type: ignore[attr-defined]
        return test

    return mark


# -- fixtures --------------------------------------------------------------------


@dataclass(frozen=True)
class MongoTarget:
    """The MongoDB server the suite uses, or why there is none."""

    uri: str | None
    standin: bool = False
    missing: str = ""


@pytest.fixture(scope="session")
def mongo_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoTarget]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield MongoTarget(uri)
        return
    python = standin_python()
    if python is None:
        yield MongoTarget(
            None,
            missing="no MONGODB_URI and no mongoeco stand-in: run tests/prepare_mongo_standin.sh",
        )
        return
    standin = MongoStandin(python, tmp_path_factory.mktemp("mongoeco") / "server.log")
    try:
        yield MongoTarget(standin.start(), standin=True)
    finally:
        standin.stop()


class StoreFactory:
    """Opens stores of one backend on the test's own database; several stores
    on it act like several server processes sharing it."""

    def __init__(self, backend: str, tmp_path: Path, mongo: MongoTarget) -> None:
        self.backend = backend
        self.path = tmp_path / "db" / "leadstream.db"
        self.mongo = mongo
        self.database = f"leadstream_test_{secrets.token_hex(6)}"
        self.stores: list[Store] = []

    async def open(self, *, url_options: str = "", **options: Any) -> Store:
        """A store (opened) with these constructor options; `url_options` are
        added to the MongoDB URL's query string."""
        store: Store
        if self.backend == "sqlite":
            store = SqliteStore(self.path, **options)
        else:
            from leadstream.store.mongodb import MongoStore

            assert self.mongo.uri is not None
            uri = self.mongo.uri
            if url_options:
                uri += ("&" if "?" in uri else "?") + url_options
            transactions = True if self.backend == "mongodb" and self.mongo.standin else None
            if self.backend == "mongodb-standalone":
                transactions = False
            store = MongoStore(uri, database=self.database, transactions=transactions, **options)
        await store.open()
        self.stores.append(store)
        return store

    async def close(self) -> None:
        for store in self.stores:
            if store is self.stores[0] and self.backend != "sqlite":
                await store.client.drop_database(self.database)  # type: ignore[attr-defined]
            await store.close()


@pytest.fixture(params=BACKENDS)
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path, mongo_target: MongoTarget
) -> AsyncIterator[StoreFactory]:
    backend: str = request.param
    if backend != "sqlite":
        if mongo_target.uri is None:
            if os.environ.get("CI"):
                pytest.fail(f"CI must run the MongoDB backend: {mongo_target.missing}")
            pytest.skip(mongo_target.missing)
        cannot = getattr(request.function, "standin_cannot", None)
        if mongo_target.standin and cannot and backend in cannot[1]:
            pytest.skip(f"the MongoDB stand-in cannot run this: {cannot[0]}")
    factory = StoreFactory(backend, tmp_path, mongo_target)
    yield factory
    await factory.close()


@pytest.fixture
async def store(stores: StoreFactory) -> Store:
    return await stores.open()


def item(i: int, **fields: Any) -> LeadInput:
    base = {"source": "test", "person_id": f"p{i}", "name": f"Person {i}"}
    return LeadInput(**(base | fields))


# -- upserts, versions, stats ------------------------------------------------------


async def test_upsert_never_duplicates_and_counts(store):
    first = await store.upsert_leads(
        "acme", [item(i, emails=(f"a{i}@b.example",)) for i in range(10)]
    )
    assert (first.saved, first.updated, first.unchanged) == (10, 0, 0)
    again = await store.upsert_leads(
        "acme",
        [item(i, emails=(f"a{i}@b.example",)) for i in range(10)]
        + [item(3, phones=("+1 555 0100",))],
    )
    assert (again.saved, again.updated, again.unchanged) == (0, 1, 9)
    assert await store.count_leads("acme") == 10
    stats = await store.lead_stats("acme")
    assert (stats.total, stats.with_email, stats.with_phone, stats.with_both) == (10, 10, 1, 1)
    assert [c.version for c in first.changes + again.changes] == list(range(1, 12))
    assert await store.current_version("acme") == 11
    assert await store.current_version("globex") == 0
    assert await store.upsert_leads("acme", []) == type(first)(0, 0, 0, [], [])


async def test_a_person_twice_in_one_batch_is_saved_once(store):
    result = await store.upsert_leads("acme", [item(1, title="CTO"), item(1, title="CEO")])
    assert (result.saved, result.updated, result.unchanged) == (1, 0, 0)
    assert [(c.version, c.op) for c in result.changes] == [(1, "insert"), (2, "update")]
    assert result.changes[0].lead.title == "CTO" and result.changes[1].lead.title == "CEO"
    [lead] = result.leads
    assert lead.title == "CEO" and lead.created_at == lead.updated_at
    assert await store.get_lead("acme", lead.id) == lead


async def test_upsert_keeps_fields_it_does_not_supply(store):
    saved = (await store.upsert_leads("acme", [item(1, title="CTO", company="Acme")])).leads[0]
    updated = (await store.upsert_leads("acme", [item(1, phones=("+1 555 0100",))])).leads[0]
    assert updated.id == saved.id and updated.created_at == saved.created_at
    assert (updated.title, updated.company, updated.phones) == ("CTO", "Acme", ("+1 555 0100",))
    assert updated.updated_at >= saved.updated_at
    assert await store.get_lead("acme", saved.id) == updated
    assert await store.get_lead("globex", saved.id) is None


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
    assert log.changes[2].lead_id == lead_id  # what a resync needs of a deleted lead


async def test_stats_count_each_combination(store):
    await store.upsert_leads(
        "acme",
        [
            item(1),
            item(2, emails=("a@x.example",)),
            item(3, phones=("+1 555 0101",)),
            item(4, emails=("b@x.example",), phones=("+1 555 0102",)),
            item(5, emails=("c@x.example",), phones=("+1 555 0103",)),
        ],
    )
    await store.upsert_leads("globex", [item(1, emails=("z@x.example",))])
    stats = await store.lead_stats("acme")
    assert stats.to_wire() == {"total": 5, "withEmail": 3, "withPhone": 3, "withBoth": 2}
    assert (await store.lead_stats("globex")).to_wire()["total"] == 1
    assert (await store.lead_stats("nobody")).to_wire()["total"] == 0


async def test_updates_that_change_nothing_take_no_version(store):
    lead = (await store.upsert_leads("acme", [item(1, title="CTO")])).leads[0]
    assert await store.update_lead("acme", lead.id, {"title": "CTO"}) == lead
    assert await store.current_version("acme") == 1
    assert await store.update_lead("acme", "ld_missing", {"title": "CEO"}) is None
    assert await store.update_lead("globex", lead.id, {"title": "CEO"}) is None
    assert not await store.delete_lead("globex", lead.id)
    changed = await store.update_lead("acme", lead.id, {"title": "CEO", "tags": ["vip"]})
    assert (changed.title, changed.tags) == ("CEO", ("vip",))
    assert await store.current_version("acme") == 2


async def test_listeners_get_commits_in_version_order(store):
    seen: list[int] = []
    store.subscribe_changes(lambda changes: seen.extend(c.version for c in changes))
    await asyncio.gather(*(store.upsert_leads("acme", [item(i)]) for i in range(50)))
    await asyncio.sleep(0.05)
    assert seen == list(range(1, 51))


async def test_listeners_hear_nothing_of_writes_that_change_nothing(store):
    calls: list[list[Any]] = []
    store.subscribe_changes(calls.append)
    await store.upsert_leads("acme", [item(1)])
    await store.upsert_leads("acme", [item(1)])
    await store.delete_lead("acme", "ld_missing")
    await asyncio.sleep(0.05)
    assert [[c.op for c in changes] for changes in calls] == [["insert"]]


@standin_cannot(COMMIT_CONFLICTS, backends=("mongodb",))
async def test_two_stores_on_one_database_share_versions(stores):
    """Several server processes may share the database: versions stay consecutive."""
    first, second = await stores.open(), await stores.open()
    await asyncio.gather(
        *(s.upsert_leads("acme", [item(i)]) for i, s in enumerate([first, second] * 20))
    )
    log = await first.changes_since("acme", 0)
    assert [c.version for c in log.changes] == list(range(1, 41))
    assert (await second.lead_stats("acme")).total == 40


async def test_each_call_reports_its_duration(store):
    """`open_store` wraps every backend in `TimedStore`: each call, failed
    ones too, and each streamed chunk reports (operation, seconds)."""
    calls: list[tuple[str, float]] = []
    timed = TimedStore(store, lambda operation, seconds: calls.append((operation, seconds)))
    lead = (await timed.upsert_leads("acme", [item(1)])).leads[0]
    await timed.get_lead("acme", lead.id)
    await timed.list_leads("acme")
    with pytest.raises(InvalidCursor):
        await timed.list_leads("acme", cursor="not-a-cursor")
    pages = [page async for page in timed.iter_leads("acme")]
    assert [len(page) for page in pages] == [1]
    assert timed.backend == store.backend
    operations = ["upsert_leads", "get_lead", "list_leads", "list_leads", "iter_leads"]
    assert [operation for operation, _ in calls] == operations
    assert all(seconds >= 0 for _, seconds in calls)


# -- one person, one lead ------------------------------------------------------------


def other(i: int, **fields: Any) -> LeadInput:
    """The same kind of write as `item`, from another source."""
    return item(i, **({"source": "import", "person_id": f"row{i}"} | fields))


@pytest.mark.parametrize(
    ("stored", "new"),
    [
        ({"emails": ("Ada@Example.com",)}, {"emails": ("  ada@example.COM ",)}),
        ({"phones": ("+1 (415) 555-0100",)}, {"phones": ("+14155550100",)}),
        ({"phones": ("+44 20 7946 0958",)}, {"phones": ("44.20.7946.0958",)}),
        (
            {"linkedin": "https://www.linkedin.com/in/ada-lovelace/"},
            {"linkedin": "http://LinkedIn.com/in/Ada-Lovelace?trk=public_profile#about"},
        ),
        ({"linkedin": "https://linkedin.com/in/ada"}, {"linkedin": "linkedin.com/in/ada/"}),
    ],
    ids=["email", "phone", "phone-punctuation", "linkedin", "linkedin-no-scheme"],
)
async def test_a_new_lead_matching_a_contact_is_merged(store, stored, new):
    first = (await store.upsert_leads("acme", [item(1, **stored)])).leads[0]
    result = await store.upsert_leads("acme", [other(2, **new)])
    assert (result.saved, result.updated, result.unchanged) == (0, 1, 0)
    [lead] = result.leads
    assert lead.id == first.id and lead.sources == ("test", "import")
    assert (lead.source, lead.person_id) == ("test", "p1")  # what made it
    assert lead.to_wire()["sources"] == ["test", "import"]
    [change] = result.changes
    assert (change.op, change.lead_id, change.version) == ("update", first.id, 2)
    assert change.lead == lead == await store.get_lead("acme", first.id)
    assert await store.count_leads("acme") == 1
    assert (await store.lead_stats("acme")).total == 1
    log = await store.changes_since("acme", 1)
    assert [(c.op, c.lead_id) for c in log.changes] == [("update", first.id)]
    assert log.changes[0].lead.sources == ("test", "import")


async def test_a_merge_unions_contacts_and_newer_non_empty_fields_win(store):
    first = (
        await store.upsert_leads(
            "acme",
            [
                item(
                    1,
                    name="Ada",
                    title="CTO",
                    company="Analytical",
                    industry="Computing",
                    location="London",
                    emails=("ada@an.example", "ada@home.example"),
                    phones=("+44 20 7946 0958",),
                    linkedin="https://linkedin.com/in/ada",
                    tags=("vip",),
                )
            ],
        )
    ).leads[0]
    new = other(
        2,
        name="Ada Lovelace",
        title="",  # empty: the stored title stays
        company="Analytical Engines",
        location=None,
        emails=("ADA@AN.EXAMPLE", "countess@lovelace.example"),
        phones=("+1 415 555 0100", "+44 (20) 7946-0958"),
        linkedin="https://linkedin.com/in/ada-lovelace",
        tags=("vip", "math"),
    )
    result = await store.upsert_leads("acme", [new])
    [lead] = result.leads
    assert lead.id == first.id and lead.created_at == first.created_at
    assert (lead.name, lead.title, lead.company) == ("Ada Lovelace", "CTO", "Analytical Engines")
    assert (lead.industry, lead.location) == ("Computing", "London")
    assert lead.emails == ("ada@an.example", "ada@home.example", "countess@lovelace.example")
    assert lead.phones == ("+44 20 7946 0958", "+1 415 555 0100")
    assert lead.linkedin == "https://linkedin.com/in/ada-lovelace"
    assert lead.tags == ("vip", "math") and lead.sources == ("test", "import")
    # Found again by a contact the merge added, and by one the lead had.
    for again in (other(3, phones=("+14155550100",)), other(4, emails=("ada@home.example",))):
        again = replace(again, name="Ada Lovelace")
        assert (await store.upsert_leads("acme", [again])).leads[0].id == first.id
    # The same write again adds nothing: no change, no version.
    version = await store.current_version("acme")
    repeat = await store.upsert_leads("acme", [new])
    assert (repeat.saved, repeat.updated, repeat.unchanged) == (0, 0, 1)
    assert repeat.changes == [] and await store.current_version("acme") == version
    assert await store.count_leads("acme") == 1


async def test_a_lead_without_matching_contacts_stays_apart(store):
    await store.upsert_leads(
        "acme",
        [
            item(
                1,
                emails=("ada@an.example",),
                phones=("+1 415 555 0100",),
                linkedin="https://linkedin.com/in/ada",
            )
        ],
    )
    result = await store.upsert_leads(
        "acme",
        [
            other(2, emails=("ada@an.example.org",)),  # another address
            other(3, phones=("+1 415 555 0101",)),
            other(4, linkedin="https://linkedin.com/in/ada2"),
            other(5, phones=("0100",)),  # too short to be anyone's number
            other(6, name="Person 1"),  # a name is not an identity
        ],
    )
    assert (result.saved, result.updated) == (5, 0)
    assert await store.count_leads("acme") == 6


async def test_leads_of_another_org_are_never_matched(store):
    contacts = {"emails": ("ada@an.example",), "phones": ("+1 415 555 0100",)}
    acme = (await store.upsert_leads("acme", [item(1, **contacts)])).leads[0]
    result = await store.upsert_leads("globex", [other(2, **contacts)])
    assert (result.saved, result.updated) == (1, 0)
    [globex] = result.leads
    assert globex.id != acme.id and globex.org == "globex"
    assert [c.op for c in result.changes] == ["insert"]
    assert (await store.get_lead("acme", acme.id)).sources == ("test",)
    assert await store.count_leads("acme") == await store.count_leads("globex") == 1


async def test_one_batch_with_the_same_person_several_times_makes_one_lead(store):
    stored = (await store.upsert_leads("acme", [item(0, emails=("bob@x.example",))])).leads[0]
    phone = ("+1 415 555 0100",)
    result = await store.upsert_leads(
        "acme",
        [
            other(1, name="Ada", emails=("ada@an.example",)),
            LeadInput("rocketreach", "rr2", "Ada L.", phones=phone, emails=("ADA@an.example",)),
            LeadInput("manual", "m3", "Ada Lovelace", phones=("14155550100",), tags=("vip",)),
            other(4, name="Bob", emails=("Bob@X.example",)),  # the stored lead
            other(5, name="Carol"),
            other(6, name="Dave", phones=phone),  # the import told Ada and Dave apart
            LeadInput("rocketreach", "rr2", "Ada L.", title="CTO"),  # known by its id now
        ],
    )
    assert (result.saved, result.updated, result.unchanged) == (3, 3, 0)
    assert await store.count_leads("acme") == 4
    ada, bob, carol, dave = result.leads
    assert (ada.name, ada.title, ada.emails, ada.phones, ada.tags) == (
        "Ada L.",
        "CTO",
        ("ada@an.example",),
        phone,
        ("vip",),
    )
    assert ada.person_id == "row1" and ada.sources == ("import", "rocketreach", "manual")
    assert bob.id == stored.id and bob.name == "Bob" and bob.sources == ("test", "import")
    assert (carol.name, dave.name, dave.phones) == ("Carol", "Dave", phone)
    ops = [(c.op, c.lead_id) for c in result.changes]
    assert ops == [
        ("insert", ada.id),
        ("update", ada.id),
        ("update", ada.id),
        ("update", bob.id),
        ("insert", carol.id),
        ("insert", dave.id),
        ("update", ada.id),
    ]
    assert [c.version for c in result.changes] == list(range(2, 9))
    assert await store.get_lead("acme", ada.id) == ada


async def test_contacts_never_merge_two_people_of_one_source(store):
    """A source's own ids tell its people apart: two directory people sharing
    an office line (or a fictional 555-01xx number) stay two leads."""
    shared = {"phones": ("+1 415 555 0182",), "emails": ("jsmith@mail.example",)}
    first = await store.upsert_leads("acme", [item(1, **shared), item(2, **shared)])
    assert (first.saved, first.updated) == (2, 0)
    second = await store.upsert_leads("acme", [item(3, **shared)])
    assert second.saved == 1 and await store.count_leads("acme") == 3
    # Another source's lead with that number goes to the oldest of them.
    merged = await store.upsert_leads("acme", [other(9, phones=("+1 415-555-0182",))])
    assert (merged.saved, merged.updated) == (0, 1)
    assert merged.leads[0].id == first.leads[0].id


async def test_an_edit_changes_what_the_lead_is_found_by(store):
    lead = (await store.upsert_leads("acme", [item(1, emails=("old@an.example",))])).leads[0]
    await store.update_lead("acme", lead.id, {"emails": ["new@an.example"]})
    by_old = await store.upsert_leads("acme", [other(2, emails=("old@an.example",))])
    assert by_old.saved == 1 and by_old.leads[0].id != lead.id
    by_new = await store.upsert_leads("acme", [other(3, emails=("new@an.example",))])
    assert by_new.leads[0].id == lead.id
    assert await store.delete_lead("acme", lead.id)
    after_delete = await store.upsert_leads("acme", [other(4, emails=("new@an.example",))])
    assert after_delete.saved == 1 and after_delete.leads[0].id != lead.id


@pytest.mark.parametrize("stores", ["mongodb", "mongodb-standalone"], indirect=True)
async def test_mongodb_leads_from_before_get_their_identity_keys(stores):
    """SQLite's counterpart is in tests/test_sqlite_store.py."""
    first = await stores.open()
    stored = (await first.upsert_leads("acme", [item(1, emails=("ada@an.example",))])).leads[0]
    leads = first.db["leads"]  # type: ignore[attr-defined]
    await leads.update_many({}, {"$unset": {"identity_keys": "", "sources": ""}})
    await leads.drop_index("org_identity_keys")  # as a database of an earlier version
    second = await stores.open()  # makes the index, and fills the keys in
    assert "org_identity_keys" in await leads.index_information()
    result = await second.upsert_leads("acme", [other(2, emails=("ADA@an.example",))])
    assert result.leads[0].id == stored.id and result.leads[0].sources == ("test", "import")


async def test_notes_round_trip(store):
    lead = (await store.upsert_leads("acme", [item(1, notes="met at the fair")])).leads[0]
    assert lead.notes == "met at the fair" and lead.to_wire()["notes"] == "met at the fair"
    assert (await store.get_lead("acme", lead.id)).notes == "met at the fair"
    kept = (await store.upsert_leads("acme", [item(1, title="CTO")])).leads[0]
    assert kept.notes == "met at the fair"  # a write without notes leaves them
    changed = await store.update_lead("acme", lead.id, {"notes": "call back in May\nprefers email"})
    assert changed.notes == "call back in May\nprefers email"
    page = await store.list_leads("acme")
    assert page.leads[0].notes == changed.notes
    log = await store.changes_since("acme", 0)
    assert [c.lead.notes for c in log.changes] == [
        "met at the fair",
        "met at the fair",
        "call back in May\nprefers email",
    ]
    cleared = await store.update_lead("acme", lead.id, {"notes": None})
    assert cleared.notes is None and (await store.get_lead("acme", lead.id)).notes is None
    plain = (await store.upsert_leads("acme", [item(2)])).leads[0]
    assert plain.notes is None and plain.to_wire()["notes"] is None
    assert plain.to_wire()["sources"] == ["test"]


# -- the change log ----------------------------------------------------------------


async def test_changes_since_pages_through_the_log(store):
    await store.upsert_leads("acme", [item(i) for i in range(5)])
    await store.upsert_leads("globex", [item(1)])
    first = await store.changes_since("acme", 0, limit=2)
    assert [c.version for c in first.changes] == [1, 2] and first.version == 2
    assert not first.reset
    rest = await store.changes_since("acme", first.version)
    assert [c.version for c in rest.changes] == [3, 4, 5] and rest.version == 5
    assert {c.org for c in first.changes + rest.changes} == {"acme"}
    assert all(c.op == "insert" and c.lead.org == "acme" for c in rest.changes)
    current = await store.changes_since("acme", 5)
    assert (current.changes, current.version, current.reset) == ([], 5, False)
    with pytest.raises(ValueError, match="limit must be at least 1"):
        await store.changes_since("acme", 0, limit=0)  # both backends alike


async def test_changes_since_resets_after_prune(store):
    await store.upsert_leads("acme", [item(i) for i in range(3)])
    assert await store.prune_changes() == 0  # all within the retention window
    assert await store.prune_changes(now=10**10) == 3  # everything is past retention
    stale = await store.changes_since("acme", 1)
    assert (stale.changes, stale.version, stale.reset) == ([], 3, True)
    current = await store.changes_since("acme", 3)
    assert (current.changes, current.version, current.reset) == ([], 3, False)
    future = await store.changes_since("acme", 99)
    assert future.reset and future.version == 3
    await store.upsert_leads("acme", [item(9)])
    after = await store.changes_since("acme", 3)
    assert [c.version for c in after.changes] == [4] and not after.reset


async def test_prune_respects_the_retention_window(stores):
    store = await stores.open(changes_retention_s=3600)
    await store.upsert_leads("acme", [item(1)])
    assert await store.prune_changes(now=time.time() + 60) == 0
    assert [c.version for c in (await store.changes_since("acme", 0)).changes] == [1]
    assert await store.prune_changes(now=time.time() + 7200) == 1
    assert (await store.changes_since("acme", 0)).reset


# -- listing leads -----------------------------------------------------------------

LIST_FILTERS = {
    "none": LeadFilter(),
    "phone": LeadFilter(has_phone=True),
    "email": LeadFilter(has_email=True),
    "both": LeadFilter(has_phone=True, has_email=True),
    "q-company": LeadFilter(q="INITECH"),
    "q-digits": LeadFilter(q="5550103"),
    "q-phone-and": LeadFilter(q="555", has_phone=True),
    "company": LeadFilter(company="acme corp"),
    "tag": LeadFilter(tag="vip"),
    "tag-email": LeadFilter(tag="vip", has_email=True),
}
NAMES = ["alice", "Alice", "ALICE", "Bob", "bob", "Zoë", "Émile", "carol", "Dave", "eve"]
COMPANIES = ["Acme Corp", "acme corp", "Initech", "Globex", "Umbrella"]


async def _lead_universe(store: Store) -> list[Lead]:
    """27 leads of `acme` in three writes (ties in every sort key), two of `globex`."""
    leads: dict[str, Lead] = {}
    for batch in range(3):
        items = []
        for j in range(9):
            i = batch * 9 + j
            items.append(
                item(
                    i,
                    name=NAMES[i % len(NAMES)],
                    company=COMPANIES[i % len(COMPANIES)],
                    title="VP Sales" if i % 4 else "CTO",
                    emails=(f"p{i}@mail.example",) if i % 3 else (),
                    phones=(f"+1 (555) 01{i:02d}",) if i % 2 else (),
                    tags=("vip",) if i % 5 == 0 else (),
                )
            )
        for lead in (await store.upsert_leads("acme", items)).leads:
            leads[lead.id] = lead
    # A later update moves a lead in the name and company sorts, not in createdAt.
    moved = next(iter(leads.values()))
    leads[moved.id] = await store.update_lead(
        "acme", moved.id, {"name": "Aaron", "company": "Zeta"}
    )
    await store.upsert_leads("globex", [item(1, name="Alice", phones=("+1 555 0199",))])
    await store.upsert_leads("globex", [item(2, name="Bob")])
    return list(leads.values())


WORD = re.compile(r"[^\W_]+")


def _searchable_words(lead: Lead) -> list[str]:
    """What `q` looks in, written plainly: the words of these fields, and each
    phone's digits whole and without country or area code."""
    text = " ".join([lead.name, lead.company, lead.title, *lead.emails, *lead.phones])
    words = WORD.findall(text.casefold())
    for phone in lead.phones:
        digits = "".join(ch for ch in phone if ch.isdigit())
        words += [digits, digits[-10:], digits[-7:]]
    return words


def _matches(lead: Lead, f: LeadFilter) -> bool:
    terms = WORD.findall((f.q or "").casefold())
    words = _searchable_words(lead)
    return (
        (not f.has_phone or bool(lead.phones))
        and (not f.has_email or bool(lead.emails))
        and (f.q is None or (terms and all(any(w.startswith(t) for w in words) for t in terms)))
        and (f.company is None or lead.company.casefold() == f.company.casefold())
        and (f.tag is None or f.tag in lead.tags)
        and (f.ids is None or lead.id in f.ids)
    )


def _expected(leads: list[Lead], sort: str, f: LeadFilter) -> list[str]:
    key, descending = SORTS[sort]
    value = {
        "created_at": lambda lead: lead.created_at,
        "name_key": lambda lead: lead.name.casefold(),
        "company_key": lambda lead: lead.company.casefold(),
    }[key]
    chosen = [lead for lead in leads if _matches(lead, f)]
    chosen.sort(key=lambda lead: (value(lead), lead.id), reverse=descending)
    return [lead.id for lead in chosen]


async def _all_pages(store: Store, sort: str, f: LeadFilter, limit: int) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = await store.list_leads("acme", sort=sort, limit=limit, cursor=cursor, filter=f)
        assert len(page.leads) <= limit
        assert all(lead.org == "acme" for lead in page.leads)
        seen += [lead.id for lead in page.leads]
        if page.next_cursor is None:
            return seen
        assert len(page.leads) == limit
        cursor = page.next_cursor
    raise AssertionError("pagination did not end")


async def test_list_leads_pages_through_every_sort_and_filter(store):
    leads = await _lead_universe(store)
    some_ids = (*(lead.id for lead in leads[::4]), "ld_unknown")
    filters = LIST_FILTERS | {"ids": LeadFilter(ids=some_ids), "no-ids": LeadFilter(ids=())}
    for sort in SORTS:
        for name, f in filters.items():
            expected = _expected(leads, sort, f)
            assert bool(expected) == (name != "no-ids"), name  # the data exercises each filter
            assert await _all_pages(store, sort, f, limit=4) == expected, (sort, name)
            assert await store.count_leads("acme", f) == len(expected), name


async def test_list_leads_edges_of_a_page(store):
    leads = await _lead_universe(store)
    expected = _expected(leads, "name:asc", LeadFilter())
    assert await _all_pages(store, "name:asc", LeadFilter(), limit=1) == expected
    whole = await store.list_leads("acme", sort="name:asc", limit=len(leads))
    assert [lead.id for lead in whole.leads] == expected and whole.next_cursor is None
    assert whole.version == await store.current_version("acme")
    empty = await store.list_leads("nobody")
    assert (empty.leads, empty.next_cursor, empty.version) == ([], None, 0)


async def test_list_leads_rejects_foreign_and_broken_cursors(store):
    await _lead_universe(store)
    page = await store.list_leads("acme", sort="name:asc", limit=3)
    with pytest.raises(InvalidCursor):
        await store.list_leads("acme", sort="name:desc", cursor=page.next_cursor)
    for broken in ("!!!", "e30", encode_cursor("name:asc", {"$gt": ""}, "x")[:-2]):
        with pytest.raises(InvalidCursor):
            await store.list_leads("acme", sort="name:asc", cursor=broken)
    with pytest.raises(ValueError):
        await store.list_leads("acme", sort="title:asc")
    # Another org's cursor only positions the list: it never shows that org's rows.
    other = await store.list_leads("globex", sort="name:asc", cursor=page.next_cursor)
    assert {lead.org for lead in other.leads} == {"globex"}
    forged = encode_cursor("createdAt:desc", "9999", "ld_zzzz")
    mine = await store.list_leads("globex", sort="createdAt:desc", cursor=forged)
    assert [lead.name for lead in mine.leads] == ["Bob", "Alice"]


async def test_search_matches_word_prefixes(store):
    await store.upsert_leads(
        "acme",
        [
            item(1, name="Ada Lovelace", company="Analytical Engines", phones=("+1 415 555 0123",)),
            item(2, name="Ann (Ops)", company="A.B. Corp", emails=("ann+1@x.example",)),
            item(3, name="Bea Bennet", title="VP Sales", company="AxB Corp"),
            item(4, name="Cy", title="100% remote", company="Percent"),
        ],
    )
    await store.upsert_leads("globex", [item(1, name="Ada Other")])

    async def names(q: str) -> list[str]:
        page = await store.list_leads("acme", sort="name:asc", filter=LeadFilter(q=q))
        assert await store.count_leads("acme", LeadFilter(q=q)) == len(page.leads)
        return [lead.name for lead in page.leads]

    assert await names("ada lov") == ["Ada Lovelace"]
    assert await names("LOVELACE, ada") == ["Ada Lovelace"]
    assert await names("ove") == []  # inside a word, not at its start
    assert await names("415555") == ["Ada Lovelace"]  # phone digits typed together
    assert await names("5550123") == ["Ada Lovelace"]  # without the area code
    assert await names("+1 (415) 555") == ["Ada Lovelace"]
    assert await names("(ops)") == ["Ann (Ops)"]
    assert await names("ann+1@x") == ["Ann (Ops)"]
    assert await names("vp sal") == ["Bea Bennet"]
    assert await names("corp") == ["Ann (Ops)", "Bea Bennet"]
    assert await names("100% rem") == ["Cy"]
    for nothing in ("", "%", ".*", "   "):  # no words: nothing matches
        assert await names(nothing) == [], nothing
    assert await names("lov*") == ["Ada Lovelace"]  # "*" is not a wildcard, just not a word


async def test_search_refuses_queries_that_cannot_be_answered_cheaply(stores):
    store = await stores.open(query_bounds=QueryBounds(max_terms=3, min_prefix=2))
    await store.upsert_leads("acme", [item(i, name=f"Zeta {i}", company="Acme") for i in range(30)])
    # Words shorter than the minimum prefix alone, or too many different words.
    for broad in ("a", "e e e e", "0 1 2 3 4 5 6 7 8 9", "acme zeta corp inc"):
        f = LeadFilter(q=broad)
        with pytest.raises(QueryTooBroad):
            await store.list_leads("acme", filter=f)
        with pytest.raises(QueryTooBroad):
            await store.count_leads("acme", f)
        with pytest.raises(QueryTooBroad):
            [page async for page in store.iter_leads("acme", f)]
        with pytest.raises(QueryTooBroad):
            await store.list_leads("nobody", filter=f)  # an org without leads too
    # A short word still narrows what a longer one finds; repeats and words
    # that prefix another one count once.
    page = await store.list_leads("acme", sort="name:asc", filter=LeadFilter(q="zeta 7"))
    assert [lead.name for lead in page.leads] == ["Zeta 7"]
    many = LeadFilter(q="zeta ZETA z ze 1 acme")
    assert await store.count_leads("acme", many) == 11  # Zeta 1 and Zeta 10..19
    assert (await store.list_leads("acme", filter=LeadFilter(q="!!"))).leads == []


async def test_sqlite_stops_a_search_at_its_time_limit_and_keeps_reading(tmp_path):
    # MongoDB's side of this is `maxTimeMS`, which the stand-in does not enforce.
    store = SqliteStore(tmp_path / "limit.db", readers=1, searchers=1)
    await store.open()
    try:
        await store.upsert_leads("acme", [item(i, company="Acme") for i in range(3000)])
        store.query_bounds = QueryBounds(time_ms=0)  # every statement is past it at once
        with pytest.raises(QueryTooBroad, match="took longer than 0 ms"):
            await store.list_leads("acme", filter=LeadFilter(q="person acme"))
        with pytest.raises(QueryTooBroad):
            await store.count_leads("acme", LeadFilter(q="acme"))
        # The same connection reads on: no limit left behind, no transaction left open.
        store.query_bounds = QueryBounds()
        page = await store.list_leads("acme", limit=5, filter=LeadFilter(q="person acme"))
        assert len(page.leads) == 5 and page.version == 3000
        assert await store.count_leads("acme") == 3000
    finally:
        await store.close()


async def test_iter_leads_yields_every_match_newest_first(store):
    leads = await _lead_universe(store)
    pages = [
        page async for page in store.iter_leads("acme", LeadFilter(has_email=True), page_size=5)
    ]
    assert all(len(page) <= 5 for page in pages)
    expected = _expected(leads, "createdAt:desc", LeadFilter(has_email=True))
    assert [lead.id for page in pages for lead in page] == expected


async def test_saved_by_person_finds_the_orgs_leads(store):
    await store.upsert_leads("acme", [item(i) for i in range(0, 1200, 100)])
    await store.upsert_leads("acme", [LeadInput("other", "p100", "Elsewhere")])
    await store.upsert_leads("globex", [item(200)])
    asked = [f"p{i}" for i in range(1200)]  # more than one round of lookups
    found = await store.saved_by_person("acme", "test", asked)
    assert sorted(found) == sorted(f"p{i}" for i in range(0, 1200, 100))
    assert all(lead.source == "test" and lead.org == "acme" for lead in found.values())
    assert await store.saved_by_person("acme", "test", []) == {}
    assert list(await store.saved_by_person("globex", "test", asked)) == ["p200"]


# -- the people directory ----------------------------------------------------------

SMALL_DIRECTORY = 300


def _directory_matches(person: Person, q: PeopleQuery) -> bool:
    """What a directory query means, written plainly."""
    key = title_key(person.title)
    return (
        all(f" {word}" in key for word in q.title_terms)
        and (q.industry is None or person.industry == q.industry)
        and (q.company is None or person.company.casefold().startswith(q.company.casefold()))
        and (q.location is None or q.location.casefold() in (person.location or "").casefold())
        and (q.seniority is None or person.seniority == q.seniority)
        and all(
            word.casefold() in person.title.casefold()
            or word.casefold() in person.company.casefold()
            for word in q.keywords
        )
        and (not q.has_phone or bool(person.phones))
        and (not q.has_email or bool(person.emails))
    )


async def test_directory_streams_matches_in_chunks(store):
    people = list(PeopleGenerator(42).people(SMALL_DIRECTORY))
    assert await store.add_people(people) == SMALL_DIRECTORY
    assert await store.add_people(people[:50]) == 0
    assert await store.count_people() == SMALL_DIRECTORY
    sample = people[7]
    queries = [
        PeopleQuery(),
        PeopleQuery(title_terms=tuple(title_words("VP"))),
        PeopleQuery(title_terms=tuple(title_words("CTO")), has_email=True),
        PeopleQuery(industry=sample.industry, has_phone=True),
        PeopleQuery(company=sample.company[:4].upper()),
        PeopleQuery(location=(sample.location or "")[:3].lower()),
        PeopleQuery(seniority=sample.seniority),
        PeopleQuery(keywords=("engineer",)),
        PeopleQuery(keywords=(sample.company[:5].lower(),)),
    ]
    for query in queries:
        expected = {p.person_id for p in people if _directory_matches(p, query)}
        chunks = [c async for c in store.stream_people(query, limit=1000, chunk_size=25)]
        assert all(0 < len(chunk) <= 25 for chunk in chunks), query
        assert all(len(chunk) == 25 for chunk in chunks[:-1]), query
        found = [p.person_id for chunk in chunks for p in chunk]
        assert len(found) == len(set(found)) and set(found) == expected, query
        limited = [p async for c in store.stream_people(query, limit=10, chunk_size=4) for p in c]
        assert (
            len(limited) == min(10, len(expected)) and set(p.person_id for p in limited) <= expected
        )
    assert [c async for c in store.stream_people(PeopleQuery(), limit=0, chunk_size=5)] == []


async def test_directory_lookups(store):
    people = list(PeopleGenerator(42).people(SMALL_DIRECTORY))
    await store.add_people(people)
    person = next(p for p in people if p.linkedin)
    assert await store.get_person(person.person_id) == person
    assert await store.get_person("nobody") is None
    by_linkedin = await store.find_people(name=None, company=None, linkedin=person.linkedin + "/")
    assert by_linkedin == [person]
    first_name = person.name.split()[0]
    by_name = await store.find_people(
        name=first_name.lower(), company=person.company.upper(), linkedin=None
    )
    assert person in by_name
    assert all(p.name.casefold().startswith(first_name.casefold()) for p in by_name)
    assert len(await store.find_people(name="", company=None, linkedin=None)) == 0
    assert (
        len(await store.find_people(name=first_name[0], company=None, linkedin=None, limit=3)) <= 3
    )


async def test_stopping_a_stream_early_releases_the_reader(store):
    await store.add_people(PeopleGenerator(42).people(SMALL_DIRECTORY))
    async for _page in store.stream_people(PeopleQuery(), limit=SMALL_DIRECTORY, chunk_size=10):
        break
    assert await store.count_people() == SMALL_DIRECTORY  # the reader is not stuck


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


@standin_cannot(SLOW_INSERTS)
async def test_seeding_is_idempotent_and_grows(store):
    assert await seed_directory(store, 3000) == 3000
    assert await seed_directory(store, 3000) == 0
    assert await seed_directory(store, 5000) == 2000
    assert await store.count_people() == 5000
    assert await store.get_person("dir00000000") == next(PeopleGenerator(42).people(1))


@standin_cannot(SLOW_INSERTS)
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


# -- search result sets ------------------------------------------------------------


async def test_search_sets_expire(stores):
    store = await stores.open(search_ttl_s=-1)
    person = next(PeopleGenerator(1).people(1))
    saved = await store.save_search("acme", "alice", None, {"title": "x"}, [person])
    assert await store.get_search("acme", saved.id) is None


async def test_search_sets_belong_to_their_org(store):
    people = list(PeopleGenerator(1).people(3))
    query = {"title": "CTO", "limit": 3, "hasPhone": True, "industries": ["fintech"]}
    saved = await store.save_search("acme", "alice", "cv_1", query, people, search_id="sr_given")
    assert saved.id == "sr_given"
    kept = await store.get_search("acme", saved.id)
    assert [p.to_wire() for p in kept.people] == [p.to_wire() for p in people]
    assert (kept.org, kept.user, kept.conversation_id, kept.query) == (
        "acme",
        "alice",
        "cv_1",
        query,
    )
    assert kept.created_at == saved.created_at
    assert await store.get_search("globex", saved.id) is None
    assert await store.get_search("acme", "sr_unknown") is None


async def test_stored_search_rows_stay_within_the_orgs_quota(stores):
    store = await stores.open(search_rows_quota=10)
    people = list(PeopleGenerator(1).people(12))
    saved = []
    for i in range(4):
        saved.append(await store.save_search("acme", "alice", None, {"i": i}, people[:3]))
        await asyncio.sleep(0.002)  # created_at is in milliseconds
    other = await store.save_search("globex", "bob", None, {}, people[:3])
    # 4 x 3 rows > 10: the oldest went first, the newest three stay.
    assert await store.get_search("acme", saved[0].id) is None
    for kept in saved[1:]:
        assert len((await store.get_search("acme", kept.id)).people) == 3
    assert await store.get_search("globex", other.id) is not None  # another org's quota
    # A search of the whole quota leaves room for nothing else; an empty one counts one row.
    whole = await store.save_search("acme", "alice", None, {}, people[:10])
    await asyncio.sleep(0.002)
    empty = await store.save_search("acme", "alice", None, {}, [])
    assert [await store.get_search("acme", s.id) is not None for s in saved] == [False] * 4
    assert await store.get_search("acme", whole.id) is None
    assert (await store.get_search("acme", empty.id)).people == []


# -- conversations and messages ----------------------------------------------------


async def test_conversations_list_most_recent_first(store):
    convs = [await store.create_conversation("acme", "alice", f"chat {i}") for i in range(5)]
    await store.create_conversation("acme", "bob", "not alice's")
    await store.create_conversation("globex", "alice", "another org")
    await asyncio.sleep(0.002)  # timestamps are in milliseconds
    await store.start_exchange(convs[1], "bump", None)
    listed, cursor = await store.list_conversations("acme", "alice", limit=2)
    seen = [c.id for c in listed]
    while cursor is not None:
        listed, cursor = await store.list_conversations("acme", "alice", limit=2, cursor=cursor)
        seen += [c.id for c in listed]
    assert seen == [convs[1].id] + [c.id for c in reversed(convs) if c is not convs[1]]
    bumped = await store.get_conversation("acme", convs[1].id)
    assert bumped.updated_at > convs[1].updated_at and bumped.title == "chat 1"
    assert await store.get_conversation("globex", convs[1].id) is None
    long = await store.create_conversation("acme", "alice", "x" * 500)
    assert len(long.title) == 120
    with pytest.raises(InvalidCursor):
        await store.list_conversations("acme", "alice", cursor=encode_cursor("messages", "", ""))


async def test_messages_keep_their_order(store):
    conv = await store.create_conversation("acme", "alice", "chat")
    pairs = [await store.start_exchange(conv, f"question {i}", f"c{i}") for i in range(3)]
    for user_msg, reply, created in pairs:
        assert created and user_msg.reply_id == reply.id and reply.status == "streaming"
        assert (user_msg.role, reply.role) == ("user", "assistant")
    expected = [m.id for user_msg, reply, _ in pairs for m in (user_msg, reply)]
    listed, cursor = await store.list_messages("acme", conv.id, limit=4)
    assert cursor is not None
    more, end = await store.list_messages("acme", conv.id, limit=4, cursor=cursor)
    assert [m.id for m in listed + more] == expected and end is None
    recent = await store.recent_messages("acme", conv.id, 3)
    assert [m.id for m in recent] == expected[-3:]
    assert await store.list_messages("globex", conv.id) == ([], None)
    _, reply, _ = pairs[0]
    calls = [{"name": "search_leads", "arguments": {"title": "CTO"}}]
    await store.save_reply(
        reply.id, text="Found 3.", tool_calls=calls, status="done", usage={"total": 12}
    )
    saved = await store.get_message("acme", reply.id)
    assert (saved.text, saved.tool_calls, saved.status, saved.usage) == (
        "Found 3.",
        calls,
        "done",
        {"total": 12},
    )
    assert saved.to_wire()["toolCalls"] == calls
    assert await store.get_message("globex", reply.id) is None


async def test_start_exchange_is_idempotent(store):
    conv = await store.create_conversation("acme", "alice", "chat")
    user_msg, reply, created = await store.start_exchange(conv, "hello", "client-1")
    again = await store.start_exchange(conv, "hello (resent)", "client-1")
    assert created and again == (user_msg, reply, False)
    assert await store.find_exchange("acme", "alice", "client-1") == (conv.id, reply.id)
    assert await store.find_exchange("acme", "bob", "client-1") is None
    assert await store.find_exchange("globex", "alice", "client-1") is None
    other = await store.create_conversation("acme", "bob", "bob's")
    _, _, bob_created = await store.start_exchange(other, "hello", "client-1")
    assert bob_created  # client message ids are per user
    no_id = [await store.start_exchange(conv, "again", None) for _ in range(2)]
    assert all(created for _, _, created in no_id)
    messages, _ = await store.list_messages("acme", conv.id)
    assert len(messages) == 2 * 3


@standin_cannot(COMMIT_CONFLICTS, backends=("mongodb",))
async def test_start_exchange_settles_a_race(store):
    """Sends of one message that cross: one stores it, all get the same pair."""
    conv = await store.create_conversation("acme", "alice", "chat")
    raced = await asyncio.gather(
        *(store.start_exchange(conv, "race", "client-2") for _ in range(5))
    )
    assert [created for _, _, created in raced].count(True) == 1
    assert len({(u.id, r.id) for u, r, _ in raced}) == 1
    messages, _ = await store.list_messages("acme", conv.id)
    assert len(messages) == 2


# -- jobs --------------------------------------------------------------------------


async def test_jobs_record_their_progress(store):
    job = await store.create_job("acme", "alice", "export", {"format": "csv", "filter": {}})
    assert (job.status, job.done, job.total, job.result, job.error) == ("queued", 0, 0, None, None)
    assert await store.get_job("acme", job.id) == job
    await store.update_job(job.id, status="running", total=40)
    await store.update_job(job.id, done=20)
    running = await store.get_job("acme", job.id)
    assert (running.status, running.done, running.total) == ("running", 20, 40)
    assert running.updated_at >= job.updated_at and running.params == job.params
    await store.update_job(job.id, status="done", done=40, result={"url": "/exports/x.csv"})
    done = await store.get_job("acme", job.id)
    assert done.to_wire() == {
        "jobId": job.id,
        "kind": "export",
        "status": "done",
        "done": 40,
        "total": 40,
        "result": {"url": "/exports/x.csv"},
    }
    failed = await store.create_job("acme", "alice", "import", {})
    await store.update_job(failed.id, status="failed", error={"code": "bad_csv", "message": "x"})
    assert (await store.get_job("acme", failed.id)).error == {"code": "bad_csv", "message": "x"}
    assert await store.get_job("globex", job.id) is None
    assert await store.get_job("acme", "jb_unknown") is None


# -- the MongoDB backend's own promises -----------------------------------------------


MONGO_ONLY = pytest.mark.parametrize("stores", ["mongodb", "mongodb-standalone"], indirect=True)


@MONGO_ONLY
async def test_mongo_indexes_follow_esr_and_are_idempotent(store):
    await store.open()  # again: nothing changes, nothing fails
    indexes = await store.db["leads"].index_information()
    assert indexes["org_source_person"]["unique"]
    assert indexes["org_hashed"]["key"] == [("org", "hashed")]
    for key in {key for key, _ in SORTS.values()}:
        assert indexes[f"list_{key}"]["key"] == [("org", 1), (key, 1), ("_id", 1)]
        assert indexes[f"list_{key}_contact"]["key"] == [
            ("org", 1),
            ("contact", 1),
            (key, 1),
            ("_id", 1),
        ]
    changes = await store.db["changes"].index_information()
    assert changes["org_version"]["unique"]


@pytest.mark.parametrize("stores", ["mongodb-standalone"], indirect=True)
async def test_mongo_hole_in_the_log_waits_then_resets(stores):
    """Without transactions, versions whose writer died are skipped only after a while."""
    store = await stores.open(gap_grace_s=3600)
    await store.upsert_leads("acme", [item(1)])
    # A writer that reserved version 2 and died before logging it:
    await store.db["org_state"].update_one({"_id": "acme"}, {"$inc": {"version": 1}})
    await store.upsert_leads("acme", [item(2)])
    log = await store.changes_since("acme", 0)
    assert [c.version for c in log.changes] == [1] and not log.reset
    waiting = await store.changes_since("acme", 1)
    assert (waiting.changes, waiting.version, waiting.reset) == ([], 1, False)
    store.gap_grace_s = 0
    await asyncio.sleep(0.01)
    lost = await store.changes_since("acme", 1)
    assert (lost.changes, lost.version, lost.reset) == ([], 3, True)
    assert [c.version for c in (await store.changes_since("acme", 2)).changes] == [3]


@pytest.mark.parametrize("stores", ["mongodb"], indirect=True)
async def test_mongo_options_come_from_the_url_and_keywords(stores, mongo_target):
    store = await stores.open(
        url_options="maxPoolSize=5&minPoolSize=1&retryWrites=false",
        max_pool_size=7,  # a keyword wins over the URL
        timeout_ms=20_000,
    )
    pool = store.client.options.pool_options
    assert (pool.max_pool_size, pool.min_pool_size) == (7, 1)
    assert store.client.options.retry_writes is False
    assert store.client.options.timeout == 20
    await store.ping()
    if mongo_target.standin:  # its URL names no database: name one in the path
        from leadstream.store.mongodb import MongoStore

        named = MongoStore(mongo_target.uri.replace("/?", "/crm?"))
        await named.open()
        try:
            assert named.db.name == "crm"
        finally:
            await named.client.drop_database("crm")
            await named.close()


async def test_usage_adds_up_per_org_and_day(store):
    assert await store.usage_on("acme", "2026-11-28") == (0, 0.0)
    await store.add_usage("acme", "2026-11-28", tokens=1200, cost_usd=0.002)
    await store.add_usage("acme", "2026-11-28", tokens=300, cost_usd=None)
    await store.add_usage("acme", "2026-11-29", tokens=5, cost_usd=0.001)
    tokens, cost = await store.usage_on("acme", "2026-11-28")
    assert tokens == 1500 and cost == pytest.approx(0.002)
    assert await store.usage_on("globex", "2026-11-28") == (0, 0.0)


async def test_stale_streaming_replies_are_marked_interrupted(store):
    conversation = await store.create_conversation("acme", "alice", "t")
    _, old, _ = await store.start_exchange(conversation, "hello", None)
    await store.save_reply(old.id, text="partial", tool_calls=[], status="streaming")
    assert await store.interrupt_stale_replies(started_before="2000-01-01T00:00:00.000Z") == 0
    assert await store.interrupt_stale_replies(started_before="2999-01-01T00:00:00.000Z") == 1
    kept = await store.get_message("acme", old.id)
    assert kept.status == "interrupted" and kept.text == "partial"


async def test_reservations_hold_the_budget_until_settled(store):
    day = "2026-11-28"
    limits = {"max_tokens": 1000, "max_usd": None}
    assert await store.reserve_usage("acme", day, tokens=8000, cost_usd=0.0, **limits) == (
        1000,
        0.0,
    ), "clamped to what is left"
    assert await store.reserve_usage("acme", day, tokens=10, cost_usd=0.0, **limits) is None
    await store.settle_usage(
        "acme",
        day,
        reserved_tokens=1000,
        reserved_cost_usd=0.0,
        prompt_tokens=500,
        completion_tokens=100,
        cost_usd=0.001,
    )
    assert await store.usage_on("acme", day) == (600, pytest.approx(0.001))
    assert await store.reserve_usage("acme", day, tokens=8000, cost_usd=0.0, **limits) == (400, 0.0)
    assert await store.reserve_usage("globex", day, tokens=50, cost_usd=0.0, **limits) == (50, 0.0)
    # A USD limit holds the price of the reservation the same way.
    usd = {"max_tokens": None, "max_usd": 0.01}
    held = [await store.reserve_usage("initech", day, tokens=100, cost_usd=0.004, **usd)]
    held += [await store.reserve_usage("initech", day, tokens=100, cost_usd=0.004, **usd)]
    held += [await store.reserve_usage("initech", day, tokens=100, cost_usd=0.004, **usd)]
    assert [h[1] if h else None for h in held] == [0.004, 0.004, pytest.approx(0.002)]
    assert await store.reserve_usage("initech", day, tokens=1, cost_usd=0.004, **usd) is None


async def test_releasing_more_than_is_held_never_frees_budget_beyond_the_limit(store):
    """A settlement that releases more than is held (one repeated, or one
    whose reservation was cut short) leaves nothing held, never less than
    nothing: the next reservation is still clamped to the limit."""
    day = "2026-11-28"
    limits = {"max_tokens": 1000, "max_usd": 0.01}
    assert await store.reserve_usage("acme", day, tokens=100, cost_usd=0.001, **limits) == (
        100,
        0.001,
    )
    await store.settle_usage(
        "acme",
        day,
        reserved_tokens=300,
        reserved_cost_usd=0.003,
        prompt_tokens=0,
        completion_tokens=0,
        cost_usd=0.0,
    )
    assert await store.reserve_usage("acme", day, tokens=1200, cost_usd=0.02, **limits) == (
        1000,
        0.01,
    )
    assert await store.reserve_credits("acme", day, credits=5, max_credits=10) == 5
    await store.settle_credits("acme", day, reserved=8, used=0)
    assert await store.reserve_credits("acme", day, credits=20, max_credits=10) == 10


async def test_concurrent_reservations_never_hold_more_than_the_budget(store):
    day = "2026-11-28"
    held = await asyncio.gather(
        *(
            store.reserve_usage(
                "acme", day, tokens=300, cost_usd=0.0, max_tokens=1000, max_usd=None
            )
            for _ in range(20)
        )
    )
    granted = sorted(h[0] for h in held if h is not None)
    assert granted == [100, 300, 300, 300]
    credits = await asyncio.gather(
        *(store.reserve_credits("acme", day, credits=10, max_credits=45) for _ in range(20))
    )
    assert sorted(c for c in credits if c) == [5, 10, 10, 10, 10]


async def test_lookup_credits_are_held_then_settled(store):
    day = "2026-11-28"
    assert await store.reserve_credits("acme", day, credits=10, max_credits=12) == 10
    assert await store.reserve_credits("acme", day, credits=10, max_credits=12) == 2
    assert await store.reserve_credits("acme", day, credits=10, max_credits=12) == 0
    await store.settle_credits("acme", day, reserved=12, used=7)
    assert await store.reserve_credits("acme", day, credits=10, max_credits=12) == 5
    assert await store.reserve_credits("acme", day, credits=10, max_credits=None) == 10
    assert await store.reserve_credits("acme", "2026-11-29", credits=3, max_credits=12) == 3


async def test_usage_between_lists_each_used_day_of_the_org_in_order(store):
    assert await store.usage_between("acme", "2026-11-01", "2026-11-30") == []
    for day, prompt in (("2026-11-28", 900), ("2026-11-02", 40), ("2026-11-28", 100)):
        await store.settle_usage(
            "acme",
            day,
            reserved_tokens=0,
            reserved_cost_usd=0.0,
            prompt_tokens=prompt,
            completion_tokens=prompt // 10,
            cost_usd=0.25,
        )
    await store.settle_credits("acme", "2026-11-28", reserved=0, used=7)
    await store.settle_credits("acme", "2026-12-01", reserved=0, used=3)  # after the range
    await store.settle_usage(  # another org, and one whose name starts with ours and "|"
        "globex",
        "2026-11-28",
        reserved_tokens=0,
        reserved_cost_usd=0.0,
        prompt_tokens=5,
        completion_tokens=5,
        cost_usd=None,
    )
    await store.settle_credits("acme|2026-11-1", "2026-11-03", reserved=0, used=1)
    days = await store.usage_between("acme", "2026-11-01", "2026-11-30")
    assert [d.day for d in days] == ["2026-11-02", "2026-11-28"]
    assert days[0] == DayUsage("2026-11-02", 1, 40, 4, pytest.approx(0.25), 0)
    assert days[1] == DayUsage("2026-11-28", 2, 1000, 100, pytest.approx(0.5), 7)
    assert await store.usage_on("acme", "2026-11-28") == (1100, pytest.approx(0.5))
    assert await store.usage_between("acme", "2026-11-28", "2026-11-28") == [days[1]]
    # Credits alone (a search that looked people up) make a day with no replies.
    assert await store.usage_between("acme", "2026-12-01", "2026-12-31") == [
        DayUsage("2026-12-01", credits=3)
    ]
    # Held (not yet used) budget and credits are not usage.
    await store.reserve_usage(
        "acme", "2026-11-05", tokens=100, cost_usd=0.1, max_tokens=None, max_usd=None
    )
    await store.reserve_credits("acme", "2026-11-05", credits=4, max_credits=10)
    held = await store.usage_between("acme", "2026-11-05", "2026-11-05")
    assert all(d == DayUsage("2026-11-05") for d in held)


async def test_sqlite_usage_of_an_older_database_gets_the_new_columns(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE usage (org TEXT NOT NULL, day TEXT NOT NULL, "
            "tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0, "
            "PRIMARY KEY (org, day)) WITHOUT ROWID"
        )
        db.execute("INSERT INTO usage VALUES ('acme', '2026-11-28', 700, 0.5)")
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.usage_on("acme", "2026-11-28") == (700, 0.5)
        assert await store.reserve_usage(
            "acme", "2026-11-28", tokens=8000, cost_usd=0.0, max_tokens=1000, max_usd=None
        ) == (300, 0.0)
        assert await store.reserve_credits("acme", "2026-11-28", credits=5, max_credits=9) == 5
        # Rows from before the split count their tokens against budgets only.
        assert await store.usage_between("acme", "2026-11-01", "2026-11-30") == [
            DayUsage("2026-11-28", cost_usd=0.5)
        ]
    finally:
        await store.close()


# -- MongoDB read preference --------------------------------------------------------


@pytest.mark.parametrize("stores", ["mongodb", "mongodb-standalone"], indirect=True)
async def test_mongodb_url_read_preference_keeps_writes_and_versions_on_the_primary(stores):
    """`readPreference=secondaryPreferred` in the URL: writes, transactions and
    version reads stay on the primary; lists and stats may use a secondary."""
    from pymongo.read_preferences import Primary, SecondaryPreferred

    store = await stores.open(url_options="readPreference=secondaryPreferred")
    written = await store.upsert_leads("acme", [item(i) for i in range(3)])
    assert written.saved == 3
    lead = (await store.list_leads("acme")).leads[0]
    assert await store.update_lead("acme", lead.id, {"title": "CTO"}) is not None
    assert await store.delete_lead("acme", lead.id)
    page = await store.list_leads("acme", filter=LeadFilter(q="Person"))
    assert page.version == 5 and len(page.leads) == 2
    assert (await store.lead_stats("acme")).total == 2
    assert [c.version for c in (await store.changes_since("acme", 0)).changes] == [1, 2, 3, 4, 5]
    assert store.db.read_preference == Primary()  # versions, change log, every write
    assert store.list_read_preference == SecondaryPreferred()
