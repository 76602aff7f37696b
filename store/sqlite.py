"""The embedded store: one SQLite file in WAL mode.

Threading: SQLite calls block, so they never run on the event loop. All
writes go through one dedicated writer thread (SQLite has one writer at a
time anyway; one thread means no lock contention inside the process), and
reads run on a small pool of reader threads with their own connections (WAL
lets readers proceed while the writer commits). We use the standard
library's `sqlite3` on our own executors rather than aiosqlite, which starts
one thread per connection and would give us no say over that split.
Writes start with `BEGIN IMMEDIATE`, so several server processes can share
the file: a second writer waits on SQLite's busy timeout instead of failing.

Every lead change takes the org's next version in the same transaction as
the change itself; after the commit, the change listeners are called on the
event loop in commit order (so the live feed emits after commit, in order).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import orjson

from leadstream.store.base import ChangeListener
from leadstream.store.cursors import SORTS, decode_cursor, encode_cursor
from leadstream.store.errors import StoreError
from leadstream.store.lead_identity import (
    LeadMatcher,
    input_keys,
    lead_keys,
    new_lead,
    plan_upsert,
    with_fields,
)
from leadstream.store.lead_search import QueryBounds, SearchTerms, lead_search_text
from leadstream.store.records import (
    Change,
    ChangesSince,
    Conversation,
    Job,
    Lead,
    LeadFilter,
    LeadInput,
    LeadPage,
    LeadStats,
    Message,
    PeopleQuery,
    Person,
    SearchSet,
    UpsertResult,
    iso_from_epoch,
    iso_now,
    new_id,
)
from leadstream.store.reservations import credits_grant, usage_grant
from leadstream.store.search_quota import oldest_over_quota, search_rows
from leadstream.store.titles import title_key
from leadstream.store.usage import DayUsage

log = logging.getLogger(__name__)
T = TypeVar("T")


SCHEMA = """
CREATE TABLE IF NOT EXISTS leads (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    source TEXT NOT NULL,
    person_id TEXT NOT NULL,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    title TEXT NOT NULL,
    company TEXT NOT NULL,
    company_key TEXT NOT NULL,
    industry TEXT,
    location TEXT,
    emails TEXT NOT NULL,
    phones TEXT NOT NULL,
    linkedin TEXT,
    tags TEXT NOT NULL,
    has_email INTEGER NOT NULL,
    has_phone INTEGER NOT NULL,
    search_text TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    notes TEXT,
    sources TEXT,  -- JSON list; NULL: just `source` (see LEAD_ADDED_COLUMNS)
    UNIQUE (org, source, person_id)
);
-- Every list is org equality, then the sort key, then id (ESR). The contact
-- flags ride along so a filtered page is checked inside the index: with 60%
-- of leads having a phone, a filtered page reads under 2x the rows of an
-- unfiltered one, at any depth, without more indexes to maintain on write.
CREATE INDEX IF NOT EXISTS leads_created ON leads (org, created_at, id, has_phone, has_email);
CREATE INDEX IF NOT EXISTS leads_name ON leads (org, name_key, id, has_phone, has_email);
CREATE INDEX IF NOT EXISTS leads_company ON leads (org, company_key, id, has_phone, has_email);
-- One person, one lead (`store.lead_identity`): a new lead finds the lead it
-- is merged into by an identity key (normalised email, phone, LinkedIn URL)
-- of a lead of another source of its org. `identity_hashes` maps a 64-bit
-- hash of (org, source, key) to the oldest lead of that source with that key
-- (a key thousands of one source's leads share stays one row; a hash
-- collision only makes a lead a candidate, which the matcher checks on its
-- real keys). `lead_sources` lists each org's sources, so a save probes
-- only the other sources the org has. Kept by `_LeadWriter`.
CREATE TABLE IF NOT EXISTS identity_hashes (
    hash INTEGER PRIMARY KEY,
    lead_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lead_sources (
    org TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (org, source)
) WITHOUT ROWID;
-- Word-prefix search (`q`) over name, company, title, emails and phones.
CREATE VIRTUAL TABLE IF NOT EXISTS leads_fts USING fts5(
    search_text, content='leads', content_rowid='rowid', detail='none',
    tokenize='unicode61 remove_diacritics 2'
);
-- New rows are indexed by `_LeadWriter._flush` with one INSERT ... SELECT per
-- batch: about 5x cheaper than a trigger firing per row. (Databases made
-- before that had a trigger.)
DROP TRIGGER IF EXISTS leads_fts_insert;
CREATE TRIGGER IF NOT EXISTS leads_fts_delete AFTER DELETE ON leads BEGIN
    INSERT INTO leads_fts (leads_fts, rowid, search_text)
        VALUES ('delete', old.rowid, old.search_text);
END;
CREATE TRIGGER IF NOT EXISTS leads_fts_update AFTER UPDATE OF search_text ON leads BEGIN
    INSERT INTO leads_fts (leads_fts, rowid, search_text)
        VALUES ('delete', old.rowid, old.search_text);
    INSERT INTO leads_fts (rowid, search_text) VALUES (new.rowid, new.search_text);
END;

CREATE TABLE IF NOT EXISTS org_state (
    org TEXT PRIMARY KEY,
    version INTEGER NOT NULL DEFAULT 0,
    pruned_through INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    with_email INTEGER NOT NULL DEFAULT 0,
    with_phone INTEGER NOT NULL DEFAULT 0,
    with_both INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS changes (
    org TEXT NOT NULL,
    version INTEGER NOT NULL,
    op TEXT NOT NULL,
    lead_id TEXT NOT NULL,
    lead TEXT,
    at TEXT NOT NULL,
    at_epoch REAL NOT NULL,
    PRIMARY KEY (org, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS changes_at ON changes (at_epoch);

CREATE TABLE IF NOT EXISTS people (
    person_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    title TEXT NOT NULL,
    title_key TEXT NOT NULL,
    seniority TEXT,
    department TEXT,
    company TEXT NOT NULL,
    industry TEXT,
    location TEXT,
    emails TEXT NOT NULL,
    phones TEXT NOT NULL,
    linkedin TEXT,
    has_email INTEGER NOT NULL,
    has_phone INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS people_industry ON people (industry);
CREATE INDEX IF NOT EXISTS people_company ON people (company COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS people_name ON people (name COLLATE NOCASE);

CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    user_id TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_user ON conversations (org, user_id, updated_at, id);

CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    org TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    tool_calls TEXT NOT NULL,
    status TEXT NOT NULL,
    client_message_id TEXT,
    reply_id TEXT,
    usage TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation_id, created_at, id);
CREATE UNIQUE INDEX IF NOT EXISTS messages_client_id
    ON messages (org, user_id, client_message_id) WHERE client_message_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS searches (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    user_id TEXT NOT NULL,
    conversation_id TEXT,
    query TEXT NOT NULL,
    people TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_epoch REAL NOT NULL,
    row_count INTEGER NOT NULL DEFAULT 0  -- counts against the org's stored-rows quota
);
CREATE INDEX IF NOT EXISTS searches_org ON searches (org, created_at);
CREATE INDEX IF NOT EXISTS searches_expires ON searches (expires_epoch);

CREATE TABLE IF NOT EXISTS usage (
    org TEXT NOT NULL,
    day TEXT NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (org, day)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    done INTEGER NOT NULL,
    total INTEGER NOT NULL,
    result TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_user_status ON jobs (org, user_id, status, updated_at);
"""

LEAD_COLUMNS = (
    "id, org, person_id, source, name, title, company, industry, location, "
    "emails, phones, linkedin, tags, created_at, updated_at, notes, sources"
)
PEOPLE_COLUMNS = (
    "person_id, name, title, company, industry, location, emails, phones, linkedin, "
    "seniority, department"
)


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative/path` or `sqlite:////absolute/path` -> a Path."""
    if not url.startswith("sqlite:///"):
        raise StoreError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite:///") :]
    if not rest:
        raise StoreError("the sqlite URL names no file")
    return Path(rest)


class SqliteStore:
    """The store on one SQLite file. See the module docstring for threading.

    :param path: the database file (its folder is created if missing).
    :param readers: reader threads (and connections).
    :param changes_retention_s: how long the change log keeps entries.
    :param search_ttl_s: how long a search result set can be referred to.
    :param query_bounds: what one search `q` may cost (terms, time).
    :param search_rows_quota: result rows an org's stored searches may hold;
        a new search past it drops the org's oldest ones first.
    :param searchers: threads (and connections) for lead reads with a `q`,
        apart from the readers, so searches never queue other reads.
    """

    backend = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        readers: int = 4,
        changes_retention_s: int = 7 * 24 * 3600,
        search_ttl_s: int = 24 * 3600,
        query_bounds: QueryBounds | None = None,
        search_rows_quota: int = 20_000,
        searchers: int = 2,
    ) -> None:
        self.path = path
        self.changes_retention_s = changes_retention_s
        self.search_ttl_s = search_ttl_s
        self.query_bounds = query_bounds or QueryBounds()
        self.search_rows_quota = search_rows_quota
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-reader")
        self._searchers = ThreadPoolExecutor(searchers, thread_name_prefix="sqlite-search")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._listeners: list[ChangeListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        #: called with (operation, seconds) after each database call (metrics).
        self.on_call: Callable[[str, float], None] | None = None

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        # executescript() manages its own transaction, so not through _write().
        await loop.run_in_executor(self._writer, lambda: self._connection().executescript(SCHEMA))
        await loop.run_in_executor(self._writer, lambda: _add_search_row_count(self._connection()))
        await loop.run_in_executor(self._writer, lambda: _add_usage_columns(self._connection()))
        await loop.run_in_executor(self._writer, lambda: self._transaction(_add_lead_columns))

    async def close(self) -> None:
        # Each connection is closed on the thread that owns it.
        await asyncio.get_running_loop().run_in_executor(self._writer, self._close_local)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._searchers.shutdown(wait=True)
        with self._connections_lock:
            remaining, self._connections = self._connections, []
        for db in remaining:  # reader connections: their threads have ended
            db.close()

    async def ping(self) -> None:
        await self._read(lambda db: db.execute("SELECT 1").fetchone())

    def subscribe_changes(self, listener: ChangeListener) -> None:
        """Call `listener(changes)` on the event loop after each commit that
        changed leads, in commit order."""
        self._listeners.append(listener)

    # -- threads and connections -------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("PRAGMA cache_size=-65536")
            # Checkpoint the WAL at 64 MB rather than 4 MB: index pages that
            # bulk writes touch again and again are copied back once, not
            # many times (about 10% more upserts/s at 1,000,000 leads).
            db.execute("PRAGMA wal_autocheckpoint=16384")
            self._local.db = db
            with self._connections_lock:
                self._connections.append(db)
        return db

    def _close_local(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            with self._connections_lock:
                self._connections.remove(db)

    async def _read(self, fn: Callable[[sqlite3.Connection], T], *, search: bool = False) -> T:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        pool = self._searchers if search else self._readers
        try:
            return await loop.run_in_executor(pool, lambda: fn(self._connection()))
        finally:
            self._observe(fn, started)

    @contextmanager
    def _time_limited(self, db: sqlite3.Connection, terms: SearchTerms | None) -> Iterator[None]:
        """Stop the statements of a search (`terms` given) at the time limit of
        `query_bounds` with `QueryTooBroad`; other reads run unlimited."""
        if terms is None:
            yield
            return
        deadline = time.monotonic() + self.query_bounds.time_ms / 1000
        # SQLite calls this every 1,000 VM steps (a few microseconds); true aborts the statement.
        db.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
        try:
            yield
        except sqlite3.OperationalError as exc:
            if str(exc) != "interrupted":
                raise
            raise self.query_bounds.too_slow() from None
        finally:
            db.set_progress_handler(None, 0)

    def _search_terms(self, f: LeadFilter) -> SearchTerms | None:
        return self.query_bounds.terms(f.q) if f.q is not None else None

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            return await loop.run_in_executor(self._writer, lambda: self._transaction(fn))
        finally:
            self._observe(fn, started)

    def _observe(self, fn: Callable[..., object], started: float) -> None:
        if self.on_call is not None:
            # Every fn is a lambda or local function of a public method: its
            # qualified name says which one (SqliteStore.list_leads.<locals>.run).
            operation = fn.__qualname__.split(".<locals>")[0].rsplit(".", 1)[-1]
            self.on_call(operation, time.perf_counter() - started)

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        # Results of lead writes carry the changes they committed.
        changes = getattr(result, "changes", None)
        if changes and self._listeners and self._loop is not None:
            for listener in self._listeners:
                self._loop.call_soon_threadsafe(listener, list(changes))
        return result

    async def _stream(
        self, produce: Callable[[sqlite3.Connection], Iterator[list[T]]]
    ) -> AsyncIterator[list[T]]:
        """Run a chunk generator on a reader thread; yield its chunks as they
        come (the first chunk does not wait for the last row)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[T] | BaseException | None] = asyncio.Queue(maxsize=4)
        stop = threading.Event()

        def put(item: list[T] | BaseException | None) -> None:
            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            future.result()

        def run() -> None:
            try:
                for chunk in produce(self._connection()):
                    if stop.is_set():
                        return
                    put(chunk)
            except BaseException as exc:  # noqa: BLE001 - re-raised by the consumer
                put(exc)
                return
            put(None)

        task = loop.run_in_executor(self._readers, run)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while not task.done():  # unblock a producer waiting on a full queue
                while not queue.empty():
                    queue.get_nowait()
                await asyncio.sleep(0.001)

    # -- people directory ----------------------------------------------------

    async def count_people(self) -> int:
        return await self._read(lambda db: db.execute("SELECT count(*) FROM people").fetchone()[0])

    async def add_people(self, people: Iterable[Person]) -> int:
        """Insert directory entries (existing person ids are left alone)."""
        rows = [
            (
                p.person_id,
                p.name,
                p.title,
                title_key(p.title),
                p.seniority,
                p.department,
                p.company,
                p.industry,
                p.location,
                _json(p.emails),
                _json(p.phones),
                p.linkedin,
                int(bool(p.emails)),
                int(bool(p.phones)),
            )
            for p in people
        ]

        def insert(db: sqlite3.Connection) -> int:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO people (person_id, name, title, title_key, seniority, "
                "department, company, industry, location, emails, phones, linkedin, has_email, "
                "has_phone) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            return db.total_changes - before

        return await self._write(insert)

    def stream_people(
        self, query: PeopleQuery, *, limit: int, chunk_size: int
    ) -> AsyncIterator[list[Person]]:
        """Matching directory people, at most `limit`, in chunks as SQLite finds them."""
        where, params = _people_where(query)
        sql = f"SELECT {PEOPLE_COLUMNS} FROM people WHERE {where} LIMIT ?"

        def produce(db: sqlite3.Connection) -> Iterator[list[Person]]:
            cursor = db.execute(sql, [*params, limit])
            while rows := cursor.fetchmany(chunk_size):
                yield [_person(row) for row in rows]

        return self._stream(produce)

    async def get_person(self, person_id: str) -> Person | None:
        row = await self._read(
            lambda db: db.execute(
                f"SELECT {PEOPLE_COLUMNS} FROM people WHERE person_id = ?", (person_id,)
            ).fetchone()
        )
        return _person(row) if row else None

    async def find_people(
        self, *, name: str | None, company: str | None, linkedin: str | None, limit: int = 5
    ) -> list[Person]:
        clauses, params = [], []
        if linkedin:
            clauses.append("linkedin = ?")
            params.append(linkedin.rstrip("/"))
        if name:
            clauses.append("name LIKE ? ESCAPE '\\'")
            params.append(_like(name, prefix=True))
        if company:
            clauses.append("company LIKE ? ESCAPE '\\'")
            params.append(_like(company, prefix=True))
        if not clauses:
            return []
        sql = f"SELECT {PEOPLE_COLUMNS} FROM people WHERE {' AND '.join(clauses)} LIMIT ?"
        rows = await self._read(lambda db: db.execute(sql, [*params, limit]).fetchall())
        return [_person(row) for row in rows]

    # -- leads ---------------------------------------------------------------

    async def upsert_leads(self, org: str, items: list[LeadInput]) -> UpsertResult:
        """Insert or update leads by (org, source, person_id), or merge them
        into the org's lead of the same person (`store.lead_identity`); never
        duplicates. Leads whose fields do not change get no change entry."""
        if not items:
            return UpsertResult(0, 0, 0, [], [])

        def run(db: sqlite3.Connection) -> UpsertResult:
            writer = _LeadWriter(db, org)
            matcher = LeadMatcher(writer.candidates(items), {item.source for item in items})
            plan = plan_upsert(items, matcher, writer)
            writer.finish()
            leads = [matcher.current(lead_id) for lead_id in plan.lead_ids]
            return UpsertResult(plan.saved, plan.updated, plan.unchanged, writer.changes, leads)

        return await self._write(run)

    async def update_lead(self, org: str, lead_id: str, fields: dict[str, Any]) -> Lead | None:
        """Change some fields of a lead (keys as in `LeadInput`); None if absent."""

        def run(db: sqlite3.Connection) -> _Written:
            writer = _LeadWriter(db, org)
            existing = writer.by_id(lead_id)
            if existing is None:
                return _Written(None, [])
            lead = writer.update(existing, with_fields(existing, fields))
            writer.finish()
            return _Written(lead, writer.changes)

        return (await self._write(run)).lead

    async def delete_lead(self, org: str, lead_id: str) -> bool:
        def run(db: sqlite3.Connection) -> _Written:
            writer = _LeadWriter(db, org)
            existing = writer.by_id(lead_id)
            if existing is None:
                return _Written(None, [])
            writer.delete(existing)
            writer.finish()
            return _Written(existing, writer.changes)

        return (await self._write(run)).lead is not None

    async def get_lead(self, org: str, lead_id: str) -> Lead | None:
        row = await self._read(
            lambda db: db.execute(
                f"SELECT {LEAD_COLUMNS} FROM leads WHERE org = ? AND id = ?", (org, lead_id)
            ).fetchone()
        )
        return _lead(row) if row else None

    async def saved_by_person(
        self, org: str, source: str, person_ids: list[str]
    ) -> dict[str, Lead]:
        """The org's saved leads among these provider ids, by person id."""
        if not person_ids:
            return {}

        def run(db: sqlite3.Connection) -> dict[str, Lead]:
            found: dict[str, Lead] = {}
            for start in range(0, len(person_ids), 500):
                part = person_ids[start : start + 500]
                marks = ",".join("?" * len(part))
                for row in db.execute(
                    f"SELECT {LEAD_COLUMNS} FROM leads WHERE org = ? AND source = ? "
                    f"AND person_id IN ({marks})",
                    (org, source, *part),
                ):
                    lead = _lead(row)
                    found[lead.person_id] = lead
            return found

        return await self._read(run)

    async def list_leads(
        self,
        org: str,
        *,
        sort: str = "createdAt:desc",
        limit: int = 50,
        cursor: str | None = None,
        filter: LeadFilter | None = None,
    ) -> LeadPage:
        """One page of the org's leads, keyset-paginated (no offsets)."""
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}")
        if limit < 1:
            raise ValueError("limit must be at least 1")
        column, descending = SORTS[sort]
        key: tuple[Any, str] | None = decode_cursor(cursor, sort) if cursor is not None else None
        order = "DESC" if descending else "ASC"
        lead_filter = filter or LeadFilter()
        terms = self._search_terms(lead_filter)  # a too broad q stops here, before any read

        def run(db: sqlite3.Connection) -> LeadPage:
            db.execute("BEGIN")  # one snapshot for the rows and the version
            try:
                with self._time_limited(db, terms):
                    where, params = _lead_where(db, org, lead_filter, terms)
                    if key is not None:
                        where += f" AND ({column}, id) {'<' if descending else '>'} (?, ?)"
                        params += list(key)
                    sql = (
                        f"SELECT {LEAD_COLUMNS}, {column} FROM leads WHERE {where} "
                        f"ORDER BY {column} {order}, id {order} LIMIT ?"
                    )
                    rows = db.execute(sql, [*params, limit + 1]).fetchall()
                version = _org_version(db, org)
            finally:
                db.execute("COMMIT")
            next_cursor = None
            if len(rows) > limit:
                rows = rows[:limit]
                next_cursor = encode_cursor(sort, rows[-1][-1], rows[-1][0])
            return LeadPage([_lead(row[:-1]) for row in rows], next_cursor, version)

        return await self._read(run, search=terms is not None)

    async def iter_leads(
        self, org: str, filter: LeadFilter | None = None, *, page_size: int = 1000
    ) -> AsyncIterator[list[Lead]]:
        """Every matching lead, newest first, a keyset page at a time."""
        cursor: str | None = None
        while True:
            page = await self.list_leads(
                org, sort="createdAt:desc", limit=page_size, cursor=cursor, filter=filter
            )
            if page.leads:
                yield page.leads
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def count_leads(self, org: str, filter: LeadFilter | None = None) -> int:
        lead_filter = filter or LeadFilter()
        terms = self._search_terms(lead_filter)

        def run(db: sqlite3.Connection) -> int:
            with self._time_limited(db, terms):
                where, params = _lead_where(db, org, lead_filter, terms)
                sql = f"SELECT count(*) FROM leads WHERE {where}"
                return int(db.execute(sql, params).fetchone()[0])

        return await self._read(run, search=terms is not None)

    async def lead_stats(self, org: str) -> LeadStats:
        row = await self._read(
            lambda db: db.execute(
                "SELECT total, with_email, with_phone, with_both FROM org_state WHERE org = ?",
                (org,),
            ).fetchone()
        )
        return LeadStats(*row) if row else LeadStats()

    async def current_version(self, org: str) -> int:
        return await self._read(lambda db: _org_version(db, org))

    async def changes_since(self, org: str, since: int, *, limit: int = 1000) -> ChangesSince:
        """Changes after version `since`, oldest first. `reset` is true when the
        log no longer reaches back to `since` (the client must reload)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")

        def run(db: sqlite3.Connection) -> ChangesSince:
            db.execute("BEGIN")
            try:
                state = db.execute(
                    "SELECT version, pruned_through FROM org_state WHERE org = ?", (org,)
                ).fetchone()
                version, pruned_through = state if state else (0, 0)
                if since < pruned_through or since > version:
                    return ChangesSince([], version, True)
                rows = db.execute(
                    "SELECT version, op, lead_id, lead, at FROM changes "
                    "WHERE org = ? AND version > ? ORDER BY version LIMIT ?",
                    (org, since, limit),
                ).fetchall()
            finally:
                db.execute("COMMIT")
            changes = [_change(org, row) for row in rows]
            return ChangesSince(changes, changes[-1].version if changes else version, False)

        return await self._read(run)

    async def prune_changes(self, *, now: float | None = None) -> int:
        """Drop change-log entries older than the retention window."""
        cutoff = (time.time() if now is None else now) - self.changes_retention_s

        def run(db: sqlite3.Connection) -> int:
            pruned = db.execute(
                "SELECT org, max(version) FROM changes WHERE at_epoch < ? GROUP BY org", (cutoff,)
            ).fetchall()
            for org, through in pruned:
                db.execute(
                    "UPDATE org_state SET pruned_through = max(pruned_through, ?) WHERE org = ?",
                    (through, org),
                )
            return db.execute("DELETE FROM changes WHERE at_epoch < ?", (cutoff,)).rowcount

        return await self._write(run)

    # -- conversations and messages ------------------------------------------

    async def create_conversation(self, org: str, user: str, title: str) -> Conversation:
        now = iso_now()
        conv = Conversation(new_id("cv"), org, user, title[:120], now, now)
        await self._write(
            lambda db: db.execute(
                "INSERT INTO conversations VALUES (?,?,?,?,?,?)",
                (conv.id, org, user, conv.title, now, now),
            )
        )
        return conv

    async def get_conversation(self, org: str, conversation_id: str) -> Conversation | None:
        row = await self._read(
            lambda db: db.execute(
                "SELECT id, org, user_id, title, created_at, updated_at FROM conversations "
                "WHERE org = ? AND id = ?",
                (org, conversation_id),
            ).fetchone()
        )
        return Conversation(*row) if row else None

    async def list_conversations(
        self, org: str, user: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Conversation], str | None]:
        where, params = "org = ? AND user_id = ?", [org, user]
        if cursor is not None:
            value, last_id = decode_cursor(cursor, "conversations")
            where += " AND (updated_at, id) < (?, ?)"
            params += [value, last_id]
        sql = (
            "SELECT id, org, user_id, title, created_at, updated_at FROM conversations "
            f"WHERE {where} ORDER BY updated_at DESC, id DESC LIMIT ?"
        )
        rows = await self._read(lambda db: db.execute(sql, [*params, limit + 1]).fetchall())
        items = [Conversation(*row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor("conversations", items[-1].updated_at, items[-1].id)
        return items, next_cursor

    async def start_exchange(
        self, conversation: Conversation, text: str, client_message_id: str | None
    ) -> tuple[Message, Message, bool]:
        """Store a user message and the (empty, streaming) assistant reply to it.

        Returns (user message, reply, created). With a `client_message_id`
        seen before for this user, nothing is stored and the earlier pair is
        returned with `created` false (`chat:send` is idempotent)."""
        now = iso_now()
        user_msg = Message(
            new_id("mg"),
            conversation.id,
            conversation.org,
            conversation.user,
            "user",
            text,
            client_message_id=client_message_id,
            created_at=now,
        )
        reply = Message(
            new_id("mg"),
            conversation.id,
            conversation.org,
            conversation.user,
            "assistant",
            "",
            status="streaming",
            created_at=now,
        )
        user_msg = replace(user_msg, reply_id=reply.id)

        def run(db: sqlite3.Connection) -> tuple[Message, Message, bool]:
            if client_message_id is not None:
                row = db.execute(
                    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE org = ? AND user_id = ? "
                    "AND client_message_id = ?",
                    (conversation.org, conversation.user, client_message_id),
                ).fetchone()
                if row is not None:
                    earlier = _message(row)
                    reply_row = db.execute(
                        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (earlier.reply_id,)
                    ).fetchone()
                    return earlier, _message(reply_row), False
            for message in (user_msg, reply):
                db.execute(
                    f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    _message_row(message),
                )
            db.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation.id)
            )
            return user_msg, reply, True

        return await self._write(run)

    async def find_exchange(
        self, org: str, user: str, client_message_id: str
    ) -> tuple[str, str] | None:
        """(conversation id, reply id) of the user's message sent with
        `client_message_id`, if there is one."""
        row = await self._read(
            lambda db: db.execute(
                "SELECT conversation_id, reply_id FROM messages WHERE org = ? AND user_id = ? "
                "AND client_message_id = ?",
                (org, user, client_message_id),
            ).fetchone()
        )
        return (row[0], row[1]) if row else None

    async def interrupt_stale_replies(self, *, started_before: str) -> int:
        """Mark replies still `streaming` that started before the given time
        (ISO-8601) as `interrupted`: their process is gone."""
        return await self._write(
            lambda db: (
                db.execute(
                    "UPDATE messages SET status = 'interrupted' WHERE role = 'assistant' "
                    "AND status = 'streaming' AND created_at < ?",
                    (started_before,),
                ).rowcount
            )
        )

    async def save_reply(
        self,
        message_id: str,
        *,
        text: str,
        tool_calls: list[dict[str, Any]],
        status: str,
        usage: dict[str, Any] | None = None,
    ) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE messages SET text = ?, tool_calls = ?, status = ?, usage = ? WHERE id = ?",
                (text, _json(tool_calls), status, _json(usage) if usage else None, message_id),
            )
        )

    async def get_message(self, org: str, message_id: str) -> Message | None:
        row = await self._read(
            lambda db: db.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE org = ? AND id = ?",
                (org, message_id),
            ).fetchone()
        )
        return _message(row) if row else None

    async def list_messages(
        self, org: str, conversation_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Message], str | None]:
        """Messages oldest first."""
        where, params = "org = ? AND conversation_id = ?", [org, conversation_id]
        if cursor is not None:
            value, last_id = decode_cursor(cursor, "messages")
            where += " AND (created_at, id) > (?, ?)"
            params += [value, last_id]
        sql = (
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {where} ORDER BY created_at, id LIMIT ?"
        )
        rows = await self._read(lambda db: db.execute(sql, [*params, limit + 1]).fetchall())
        items = [_message(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor("messages", items[-1].created_at, items[-1].id)
        return items, next_cursor

    async def recent_messages(self, org: str, conversation_id: str, limit: int) -> list[Message]:
        """The last `limit` messages of a conversation, oldest first (history for the model)."""
        rows = await self._read(
            lambda db: db.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE org = ? AND conversation_id = ? "
                "ORDER BY created_at DESC, id DESC LIMIT ?",
                (org, conversation_id, limit),
            ).fetchall()
        )
        return [_message(row) for row in reversed(rows)]

    # -- search result sets --------------------------------------------------

    async def save_search(
        self,
        org: str,
        user: str,
        conversation_id: str | None,
        query: dict[str, Any],
        people: list[Person],
        *,
        search_id: str | None = None,
    ) -> SearchSet:
        search = SearchSet(
            search_id or new_id("sr"), org, user, conversation_id, query, people, iso_now()
        )
        expires = time.time() + self.search_ttl_s
        payload = orjson.dumps([p.to_wire() for p in people]).decode()
        rows = search_rows(people)

        def run(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM searches WHERE expires_epoch < ?", (time.time(),))
            stored = db.execute(
                "SELECT id, row_count FROM searches WHERE org = ? ORDER BY created_at, rowid",
                (org,),
            ).fetchall()
            dropped = oldest_over_quota(stored, rows, self.search_rows_quota)
            db.executemany("DELETE FROM searches WHERE id = ?", [(i,) for i in dropped])
            db.execute(
                "INSERT INTO searches (id, org, user_id, conversation_id, query, people, "
                "created_at, expires_epoch, row_count) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    search.id,
                    org,
                    user,
                    conversation_id,
                    _json(query),
                    payload,
                    search.created_at,
                    expires,
                    rows,
                ),
            )

        await self._write(run)
        return search

    async def get_search(self, org: str, search_id: str) -> SearchSet | None:
        row = await self._read(
            lambda db: db.execute(
                "SELECT id, org, user_id, conversation_id, query, people, created_at FROM searches "
                "WHERE org = ? AND id = ? AND expires_epoch >= ?",
                (org, search_id, time.time()),
            ).fetchone()
        )
        if row is None:
            return None
        people = [Person.from_wire(p) for p in orjson.loads(row[5])]
        return SearchSet(row[0], row[1], row[2], row[3], orjson.loads(row[4]), people, row[6])

    # -- jobs ------------------------------------------------------------------

    async def create_job(self, org: str, user: str, kind: str, params: dict[str, Any]) -> Job:
        now = iso_now()
        job = Job(new_id("jb"), org, user, kind, "queued", params, 0, 0, None, None, now, now)  # type: ignore[arg-type]
        await self._write(
            lambda db: db.execute(
                "INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (job.id, org, user, kind, job.status, _json(params), 0, 0, None, None, now, now),
            )
        )
        return job

    async def update_job(
        self,
        job_id: str,
        *,
        status: str | None = None,
        done: int | None = None,
        total: int | None = None,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        sets, params = ["updated_at = ?"], [iso_now()]
        for column, value in (("status", status), ("done", done), ("total", total)):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(value)
        for column, value in (("result", result), ("error", error)):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(_json(value))
        await self._write(
            lambda db: db.execute(
                f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", [*params, job_id]
            )
        )

    async def create_job_within_limit(
        self,
        org: str,
        user: str,
        kind: str,
        params: dict[str, Any],
        *,
        limit: int,
        active_since: str,
    ) -> Job | None:
        now = iso_now()
        job = Job(new_id("jb"), org, user, kind, "queued", params, 0, 0, None, None, now, now)  # type: ignore[arg-type]
        row = (job.id, org, user, kind, job.status, _json(params), 0, 0, None, None, now, now)

        def insert(db: sqlite3.Connection) -> bool:
            # One statement: the count and the insert cannot interleave with another's.
            cursor = db.execute(
                "INSERT INTO jobs SELECT ?,?,?,?,?,?,?,?,?,?,?,? WHERE (SELECT COUNT(*) FROM jobs "
                "WHERE org = ? AND user_id = ? AND status IN ('queued', 'running') "
                "AND updated_at >= ?) < ?",
                (*row, org, user, active_since, limit),
            )
            return cursor.rowcount == 1

        return job if await self._write(insert) else None

    async def get_job(self, org: str, job_id: str) -> Job | None:
        row = await self._read(
            lambda db: db.execute(
                "SELECT id, org, user_id, kind, status, params, done, total, result, error, "
                "created_at, updated_at FROM jobs WHERE org = ? AND id = ?",
                (org, job_id),
            ).fetchone()
        )
        if row is None:
            return None
        return Job(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            orjson.loads(row[5]),
            row[6],
            row[7],
            orjson.loads(row[8]) if row[8] else None,
            orjson.loads(row[9]) if row[9] else None,
            row[10],
            row[11],
        )

    # -- usage -------------------------------------------------------------------

    async def add_usage(self, org: str, day: str, *, tokens: int, cost_usd: float | None) -> None:
        """Add a reply's model usage to the org's total for `day` (YYYY-MM-DD, UTC)."""
        await self._write(
            lambda db: db.execute(
                "INSERT INTO usage (org, day, tokens, cost_usd) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (org, day) DO UPDATE SET tokens = tokens + excluded.tokens, "
                "cost_usd = cost_usd + excluded.cost_usd",
                (org, day, tokens, cost_usd or 0.0),
            )
        )

    async def usage_on(self, org: str, day: str) -> tuple[int, float]:
        """(tokens, cost in USD) the org used on `day`."""
        row = await self._read(
            lambda db: db.execute(
                "SELECT tokens, cost_usd FROM usage WHERE org = ? AND day = ?", (org, day)
            ).fetchone()
        )
        return (row[0], row[1]) if row else (0, 0.0)

    async def reserve_usage(
        self,
        org: str,
        day: str,
        *,
        tokens: int,
        cost_usd: float,
        max_tokens: int | None,
        max_usd: float | None,
    ) -> tuple[int, float] | None:
        """Hold up to `tokens` / `cost_usd` of the org's budget for `day`
        (clamped to what is left); None when used + held reach a limit."""

        def reserve(db: sqlite3.Connection) -> tuple[int, float] | None:
            row = db.execute(
                "SELECT tokens, cost_usd, reserved_tokens, reserved_cost_usd FROM usage "
                "WHERE org = ? AND day = ?",
                (org, day),
            ).fetchone()
            granted = usage_grant(row or (0, 0.0, 0, 0.0), tokens, cost_usd, max_tokens, max_usd)
            if granted is not None:
                db.execute(
                    "INSERT INTO usage (org, day, reserved_tokens, reserved_cost_usd) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (org, day) DO UPDATE SET "
                    "reserved_tokens = reserved_tokens + excluded.reserved_tokens, "
                    "reserved_cost_usd = reserved_cost_usd + excluded.reserved_cost_usd",
                    (org, day, *granted),
                )
            return granted

        return await self._write(reserve)

    async def settle_usage(
        self,
        org: str,
        day: str,
        *,
        reserved_tokens: int,
        reserved_cost_usd: float,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float | None,
        replies: int = 1,
    ) -> None:
        """Release a reservation of `reserve_usage` and add what was used."""
        tokens = prompt_tokens + completion_tokens
        used = (tokens, cost_usd or 0.0, replies, prompt_tokens, completion_tokens)
        held = (reserved_tokens, reserved_cost_usd)
        await self._write(
            lambda db: db.execute(
                "INSERT INTO usage (org, day, tokens, cost_usd, replies, prompt_tokens, "
                "completion_tokens) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (org, day) DO UPDATE SET tokens = tokens + excluded.tokens, "
                "cost_usd = cost_usd + excluded.cost_usd, "
                "replies = replies + excluded.replies, "
                "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
                "completion_tokens = completion_tokens + excluded.completion_tokens, "
                "reserved_tokens = MAX(0, reserved_tokens - ?), "
                "reserved_cost_usd = MAX(0.0, reserved_cost_usd - ?)",
                (org, day, *used, *held),
            )
        )

    async def reserve_credits(
        self, org: str, day: str, *, credits: int, max_credits: int | None
    ) -> int:
        """Hold up to `credits` lookup credits of `day` (clamped to what is
        left of `max_credits`); the number held, 0 when none are left."""

        def reserve(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT credits, reserved_credits FROM usage WHERE org = ? AND day = ?", (org, day)
            ).fetchone()
            granted = credits_grant(row or (0, 0), credits, max_credits)
            if granted:
                db.execute(
                    "INSERT INTO usage (org, day, reserved_credits) VALUES (?, ?, ?) "
                    "ON CONFLICT (org, day) DO UPDATE SET "
                    "reserved_credits = reserved_credits + excluded.reserved_credits",
                    (org, day, granted),
                )
            return granted

        return await self._write(reserve)

    async def settle_credits(self, org: str, day: str, *, reserved: int, used: int) -> None:
        """Release credits held by `reserve_credits` and add those used."""
        await self._write(
            lambda db: db.execute(
                "INSERT INTO usage (org, day, credits) VALUES (?, ?, ?) "
                "ON CONFLICT (org, day) DO UPDATE SET credits = credits + excluded.credits, "
                "reserved_credits = MAX(0, reserved_credits - ?)",
                (org, day, used, reserved),
            )
        )

    async def usage_between(self, org: str, first_day: str, last_day: str) -> list[DayUsage]:
        """The org's usage of each day in the range that has any, in day order."""
        rows = await self._read(
            lambda db: db.execute(
                "SELECT day, replies, prompt_tokens, completion_tokens, cost_usd, credits "
                "FROM usage WHERE org = ? AND day >= ? AND day <= ? ORDER BY day",
                (org, first_day, last_day),
            ).fetchall()
        )
        return [DayUsage(*row) for row in rows]


# -- writing leads inside one transaction -------------------------------------


class _Written:
    __slots__ = ("changes", "lead")

    def __init__(self, lead: Lead | None, changes: list[Change]) -> None:
        self.lead = lead
        self.changes = changes


class _LeadWriter:
    """Lead writes of one transaction: rows, identity keys, versions, change
    log and stats; `store.lead_identity.plan_upsert` drives it for bulk saves.

    Inserts, updates (each lead's latest version), their identity keys and
    change-log rows are buffered and written with `executemany` at the end
    (bulk saves are the common case, and merges update leads of the same
    write); a delete flushes them first, so statements still apply in order.
    """

    def __init__(self, db: sqlite3.Connection, org: str) -> None:
        self.db = db
        self.org = org
        self.now = time.time()
        self.at = iso_from_epoch(self.now)
        db.execute("INSERT OR IGNORE INTO org_state (org) VALUES (?)", (org,))
        self.version = _org_version(db, org)
        self.changes: list[Change] = []
        self.stats = [0, 0, 0, 0]  # total, with_email, with_phone, with_both deltas
        self._inserted: dict[str, Lead] = {}  # new leads, as they are now
        # stored leads changed: their identity keys as stored, and how they are now
        self._updated: dict[str, tuple[tuple[str, ...], Lead]] = {}
        self._change_rows: list[tuple[Any, ...]] = []
        self._hashes: dict[tuple[str, str], int] = {}  # (source, key) -> its hash

    def candidates(self, items: list[LeadInput]) -> list[Lead]:
        """The stored leads these items may go to: those of the same (source,
        person_id), and those of another source sharing an identity key with
        one (a few queries, each on an index)."""
        found: dict[str, Lead] = {}
        by_source: dict[str, set[str]] = {}
        for item in items:
            by_source.setdefault(item.source, set()).add(item.person_id)
        for source, person_ids in by_source.items():
            for part in _chunks(sorted(person_ids)):
                for row in self.db.execute(
                    f"SELECT {LEAD_COLUMNS} FROM leads WHERE org = ? AND source = ? "
                    f"AND person_id IN ({','.join('?' * len(part))})",
                    (self.org, source, *part),
                ):
                    found[row[0]] = _lead(row)
        # An item's keys under each other source the org has leads of.
        org_sources = {
            source
            for (source,) in self.db.execute(
                "SELECT source FROM lead_sources WHERE org = ?", (self.org,)
            )
        }
        hashes = {
            self._hash(other, key)
            for item in items
            if org_sources - {item.source}
            for key in input_keys(item)
            for other in org_sources - {item.source}
        }
        matched: set[str] = set()
        for part in _chunks(sorted(hashes)):
            matched.update(
                lead_id
                for (lead_id,) in self.db.execute(
                    f"SELECT lead_id FROM identity_hashes "
                    f"WHERE hash IN ({','.join('?' * len(part))})",
                    part,
                )
            )
        self.db.executemany(
            "INSERT OR IGNORE INTO lead_sources (org, source) VALUES (?, ?)",
            [(self.org, source) for source in by_source.keys() - org_sources],
        )
        for part in _chunks(sorted(matched - found.keys())):
            for row in self.db.execute(
                f"SELECT {LEAD_COLUMNS} FROM leads WHERE org = ? "
                f"AND id IN ({','.join('?' * len(part))})",
                (self.org, *part),
            ):
                found[row[0]] = _lead(row)
        return list(found.values())

    def by_id(self, lead_id: str) -> Lead | None:
        row = self.db.execute(
            f"SELECT {LEAD_COLUMNS} FROM leads WHERE org = ? AND id = ?", (self.org, lead_id)
        ).fetchone()
        return _lead(row) if row else None

    def insert(self, item: LeadInput) -> Lead:
        lead = new_lead(self.org, new_id("ld"), item, self.at)
        self._inserted[lead.id] = lead
        self._count(lead, +1)
        self._log("insert", lead.id, lead)
        return lead

    def update(self, existing: Lead, changed: Lead) -> Lead:
        """Write `changed` if it differs from `existing`; return what is stored."""
        if changed == existing:
            return existing
        lead = replace(changed, updated_at=self.at)
        if lead.id in self._inserted:
            self._inserted[lead.id] = lead
        else:
            stored_keys = self._updated.get(lead.id, (lead_keys(existing), lead))[0]
            self._updated[lead.id] = (stored_keys, lead)
        self._count(existing, -1)
        self._count(lead, +1)
        self._log("update", lead.id, lead)
        return lead

    def delete(self, existing: Lead) -> None:
        self._flush()
        self.db.execute("DELETE FROM leads WHERE id = ?", (existing.id,))
        self._rekey(existing, lead_keys(existing), ())
        self._count(existing, -1)
        self._log("delete", existing.id, None)

    def finish(self) -> None:
        self._flush()
        total, email, phone, both = self.stats
        self.db.execute(
            "UPDATE org_state SET version = ?, total = total + ?, with_email = with_email + ?, "
            "with_phone = with_phone + ?, with_both = with_both + ? WHERE org = ?",
            (self.version, total, email, phone, both, self.org),
        )

    def _hash(self, source: str, key: str) -> int:
        hashed = self._hashes.get((source, key))
        if hashed is None:
            hashed = self._hashes[(source, key)] = _identity_hash(self.org, source, key)
        return hashed

    def _rekey(self, lead: Lead, before: tuple[str, ...], after: tuple[str, ...]) -> None:
        """Make the lead's rows of `identity_hashes` go from `before` to
        `after` (a key the lead gives up is no longer found for its source,
        even if another lead of the source has it: a rare miss, never a
        wrong merge)."""
        gone, new = set(before) - set(after), set(after) - set(before)
        if gone:
            self.db.executemany(
                "DELETE FROM identity_hashes WHERE hash = ? AND lead_id = ?",
                [(self._hash(lead.source, key), lead.id) for key in gone],
            )
        if new:
            self.db.executemany(
                "INSERT OR IGNORE INTO identity_hashes (hash, lead_id) VALUES (?, ?)",
                [(self._hash(lead.source, key), lead.id) for key in new],
            )

    def _flush(self) -> None:
        if self._inserted:
            # New rows take rowids above the current largest (no AUTOINCREMENT,
            # one writer): they are exactly the rows past `last` afterwards.
            (last,) = self.db.execute("SELECT coalesce(max(rowid), 0) FROM leads").fetchone()
            self.db.executemany(
                "INSERT INTO leads (id, org, source, person_id, name, name_key, title, company, "
                "company_key, industry, location, emails, phones, linkedin, tags, has_email, "
                "has_phone, search_text, notes, sources, created_at, updated_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (lead.id, self.org, lead.source, lead.person_id, *_lead_values(lead),
                     lead.created_at, lead.updated_at)
                    for lead in self._inserted.values()
                ],
            )  # fmt: skip
            self.db.execute(
                "INSERT INTO leads_fts (rowid, search_text) "
                "SELECT rowid, search_text FROM leads WHERE rowid > ?",
                (last,),
            )
            # In hash order: each B-tree page is visited once per batch.
            self.db.executemany(
                "INSERT OR IGNORE INTO identity_hashes (hash, lead_id) VALUES (?, ?)",
                sorted(
                    (self._hash(lead.source, key), lead.id)
                    for lead in self._inserted.values()
                    for key in lead_keys(lead)
                ),
            )
            self._inserted = {}
        if self._updated:
            self.db.executemany(
                "UPDATE leads SET name = ?, name_key = ?, title = ?, company = ?, "
                "company_key = ?, industry = ?, location = ?, emails = ?, phones = ?, "
                "linkedin = ?, tags = ?, has_email = ?, has_phone = ?, search_text = ?, "
                "notes = ?, sources = ?, updated_at = ? WHERE id = ?",
                [
                    (*_lead_values(lead), lead.updated_at, lead.id)
                    for _, lead in self._updated.values()
                ],
            )
            for stored_keys, lead in self._updated.values():
                self._rekey(lead, stored_keys, lead_keys(lead))
            self._updated = {}
        if self._change_rows:
            self.db.executemany("INSERT INTO changes VALUES (?,?,?,?,?,?,?)", self._change_rows)
            self._change_rows = []

    def _count(self, lead: Lead, sign: int) -> None:
        self.stats[0] += sign
        self.stats[1] += sign * bool(lead.emails)
        self.stats[2] += sign * bool(lead.phones)
        self.stats[3] += sign * bool(lead.emails and lead.phones)

    def _log(self, op: str, lead_id: str, lead: Lead | None) -> None:
        self.version += 1
        payload = _json(lead.to_wire()) if lead else None
        self._change_rows.append((self.org, self.version, op, lead_id, payload, self.at, self.now))
        self.changes.append(Change(self.org, self.version, op, lead_id, lead, self.at))  # type: ignore[arg-type]


def _chunks(values: list[T], size: int = 500) -> Iterator[list[T]]:
    """`values` in parts small enough for one statement's parameters."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _identity_hash(org: str, source: str, key: str) -> int:
    """A signed 64-bit hash of an identity key of a source's leads in an org
    (the `identity_hashes` row)."""
    digest = hashlib.blake2b(f"{org}\n{source}\n{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# -- row mapping ---------------------------------------------------------------

MESSAGE_COLUMNS = (
    "id, conversation_id, org, user_id, role, text, tool_calls, status, client_message_id, "
    "reply_id, usage, created_at"
)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _lead(row: tuple[Any, ...]) -> Lead:
    return Lead(
        id=row[0],
        org=row[1],
        person_id=row[2],
        source=row[3],
        name=row[4],
        title=row[5],
        company=row[6],
        industry=row[7],
        location=row[8],
        emails=tuple(orjson.loads(row[9])),
        phones=tuple(orjson.loads(row[10])),
        linkedin=row[11],
        tags=tuple(orjson.loads(row[12])),
        created_at=row[13],
        updated_at=row[14],
        notes=row[15],
        sources=tuple(orjson.loads(row[16])) if row[16] else (row[3],),
    )


def _lead_values(lead: Lead) -> tuple[Any, ...]:
    """name..search_text, notes and sources columns, in the order INSERT and
    UPDATE use (`sources` NULL when it is just the lead's `source`)."""
    search_text = lead_search_text(lead)
    return (
        lead.name,
        lead.name.casefold(),
        lead.title,
        lead.company,
        lead.company.casefold(),
        lead.industry,
        lead.location,
        _json(lead.emails),
        _json(lead.phones),
        lead.linkedin,
        _json(lead.tags),
        int(bool(lead.emails)),
        int(bool(lead.phones)),
        search_text,
        lead.notes,
        _json(lead.sources) if lead.sources not in ((), (lead.source,)) else None,
    )


def _person(row: tuple[Any, ...]) -> Person:
    return Person(
        person_id=row[0],
        source="directory",
        name=row[1],
        title=row[2],
        company=row[3],
        industry=row[4],
        location=row[5],
        emails=tuple(orjson.loads(row[6])),
        phones=tuple(orjson.loads(row[7])),
        linkedin=row[8],
        seniority=row[9],
        department=row[10],
    )


def _message(row: tuple[Any, ...]) -> Message:
    return Message(
        id=row[0],
        conversation_id=row[1],
        org=row[2],
        user=row[3],
        role=row[4],
        text=row[5],
        tool_calls=orjson.loads(row[6]),
        status=row[7],
        client_message_id=row[8],
        reply_id=row[9],
        usage=orjson.loads(row[10]) if row[10] else None,
        created_at=row[11],
    )


def _message_row(m: Message) -> tuple[Any, ...]:
    return (
        m.id,
        m.conversation_id,
        m.org,
        m.user,
        m.role,
        m.text,
        _json(m.tool_calls),
        m.status,
        m.client_message_id,
        m.reply_id,
        _json(m.usage) if m.usage else None,
        m.created_at,
    )


def _change(org: str, row: tuple[Any, ...]) -> Change:
    version, op, lead_id, payload, at = row
    lead = Lead.from_wire(org, orjson.loads(payload)) if payload else None
    return Change(org, version, op, lead_id, lead, at)


def _org_version(db: sqlite3.Connection, org: str) -> int:
    row = db.execute("SELECT version FROM org_state WHERE org = ?", (org,)).fetchone()
    return row[0] if row else 0


def _org_leads(db: sqlite3.Connection, org: str) -> int:
    row = db.execute("SELECT total FROM org_state WHERE org = ?", (org,)).fetchone()
    return row[0] if row else 0


def _add_search_row_count(db: sqlite3.Connection) -> None:
    """Give `searches` of a database made before the stored-rows quota its
    `row_count` column (their rows count 0 until they expire)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(searches)")}
    if "row_count" not in columns:
        db.execute("ALTER TABLE searches ADD COLUMN row_count INTEGER NOT NULL DEFAULT 0")


# Columns of `usage` added after it was first made: reservations of running
# replies and searches, and lookup credits (all per org per UTC day).
USAGE_COLUMNS = {
    "reserved_tokens": "INTEGER NOT NULL DEFAULT 0",
    "reserved_cost_usd": "REAL NOT NULL DEFAULT 0",
    "credits": "INTEGER NOT NULL DEFAULT 0",
    "reserved_credits": "INTEGER NOT NULL DEFAULT 0",
    # what the usage view shows (`tokens` is their sum, which budgets count)
    "replies": "INTEGER NOT NULL DEFAULT 0",
    "prompt_tokens": "INTEGER NOT NULL DEFAULT 0",
    "completion_tokens": "INTEGER NOT NULL DEFAULT 0",
}


def _add_usage_columns(db: sqlite3.Connection) -> None:
    """Give `usage` (new, or of an older database) the columns it lacks."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(usage)")}
    for name, declaration in USAGE_COLUMNS.items():
        if name not in columns:
            db.execute(f"ALTER TABLE usage ADD COLUMN {name} {declaration}")


# Columns of `leads` added after it was first made (one person, one lead).
LEAD_ADDED_COLUMNS = {"notes": "TEXT", "sources": "TEXT"}


def _add_lead_columns(db: sqlite3.Connection) -> None:
    """Give `leads` of an older database `notes` and `sources`, and fill
    `identity_hashes` and `lead_sources` from its leads (so they are found by
    contact from now on).
    Runs in a write transaction: another process opening the same file at
    once finds the work done."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(leads)")}
    if all(name in columns for name in LEAD_ADDED_COLUMNS):
        return
    for name, declaration in LEAD_ADDED_COLUMNS.items():
        if name not in columns:
            db.execute(f"ALTER TABLE leads ADD COLUMN {name} {declaration}")
    db.execute("INSERT OR IGNORE INTO lead_sources SELECT DISTINCT org, source FROM leads")
    rows = db.execute(f"SELECT {LEAD_COLUMNS} FROM leads")
    while chunk := rows.fetchmany(1000):
        db.executemany(
            "INSERT OR IGNORE INTO identity_hashes (hash, lead_id) VALUES (?, ?)",
            [
                (_identity_hash(lead.org, lead.source, key), lead.id)
                for lead in map(_lead, chunk)
                for key in lead_keys(lead)
            ],
        )


# -- query building ------------------------------------------------------------


def _like(text: str, *, prefix: bool = False) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%" if prefix else f"%{escaped}%"


# A search term matching at most this many leads (all orgs) is looked up in the
# full-text index first; a more common one is checked row by row while the
# sort index is walked, since matching rows are then dense. An org with at
# most this many leads is always checked row by row: that costs it less than
# asking the index (which spans every org) how common its terms are.
FTS_FIRST_MAX = 2000


def _lead_where(
    db: sqlite3.Connection, org: str, f: LeadFilter, terms: SearchTerms | None
) -> tuple[str, list[Any]]:
    clauses, params = ["org = ?"], [org]
    if f.has_phone:
        clauses.append("has_phone = 1")
    if f.has_email:
        clauses.append("has_email = 1")
    if f.company:
        clauses.append("company_key = ?")
        params.append(f.company.casefold())
    if f.tag:
        clauses.append("EXISTS (SELECT 1 FROM json_each(leads.tags) WHERE value = ?)")
        params.append(f.tag)
    if terms is not None:
        if not terms.all:
            clauses.append("0")
        else:
            # Terms shorter than the minimum prefix never go to the index: only
            # checked on the rows the others find.
            match = " AND ".join(f'"{term}"*' for term in terms.indexed)
            by_row = terms.all
            if _org_leads(db, org) > FTS_FIRST_MAX:
                matches = db.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM leads_fts WHERE leads_fts MATCH ? "
                    "LIMIT ?)",
                    (match, FTS_FIRST_MAX + 1),
                ).fetchone()[0]
                if matches <= FTS_FIRST_MAX:
                    # "+org" keeps SQLite from walking the org's sort index instead.
                    clauses[0] = "+org = ?"
                    clauses.append("rowid IN (SELECT rowid FROM leads_fts WHERE leads_fts MATCH ?)")
                    params.append(match)
                    by_row = terms.short
            for term in by_row:
                clauses.append("search_text LIKE ? ESCAPE '\\'")
                params.append("% " + _like(term, prefix=True))
    if f.ids is not None:
        clauses.append(f"id IN ({','.join('?' * len(f.ids))})" if f.ids else "0")
        params.extend(f.ids)
    return " AND ".join(clauses), params


def _people_where(q: PeopleQuery) -> tuple[str, list[Any]]:
    clauses, params = ["1"], []
    for word in q.title_terms:
        clauses.append("title_key LIKE ? ESCAPE '\\'")
        params.append("% " + _like(word, prefix=True))
    if q.industry:
        clauses.append("industry = ?")
        params.append(q.industry)
    if q.company:
        clauses.append("company LIKE ? ESCAPE '\\'")
        params.append(_like(q.company, prefix=True))
    if q.location:
        clauses.append("location LIKE ? ESCAPE '\\'")
        params.append(_like(q.location))
    if q.seniority:
        clauses.append("seniority = ?")
        params.append(q.seniority)
    for word in q.keywords:
        clauses.append("(title LIKE ? ESCAPE '\\' OR company LIKE ? ESCAPE '\\')")
        params += [_like(word), _like(word)]
    if q.has_phone:
        clauses.append("has_phone = 1")
    if q.has_email:
        clauses.append("has_email = 1")
    return " AND ".join(clauses), params
