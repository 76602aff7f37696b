"""Leads and their change log on SQLite (`base.LeadStore`).

Every lead change takes the org's next version in the same transaction as
the change itself (`lead_rows.LeadRows`); after the commit, the change
listeners are called on the event loop in commit order (so the live feed
emits after commit, in order).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from leadstream.store.base import ChangeListener
from leadstream.store.lead_identity import LeadMatcher, plan_upsert, with_fields
from leadstream.store.lead_search import QueryBounds, SearchTerms
from leadstream.store.listeners import ChangeListeners
from leadstream.store.paging import KeysetPage, lead_pages
from leadstream.store.records import (
    ChangesSince,
    Lead,
    LeadFilter,
    LeadInput,
    LeadPage,
    LeadStats,
    UpsertResult,
)
from leadstream.store.sqlite.database import SqliteDatabase
from leadstream.store.sqlite.lead_rows import LeadRows, Written
from leadstream.store.sqlite.rows import (
    LEAD_COLUMNS,
    change_from_row,
    chunks,
    lead_from_row,
    like,
    org_version,
)

# A search term matching at most this many leads (all orgs) is looked up in the
# full-text index first; a more common one is checked row by row while the
# sort index is walked, since matching rows are then dense. An org with at
# most this many leads is always checked row by row: that costs it less than
# asking the index (which spans every org) how common its terms are.
FTS_FIRST_MAX = 2000


class SqliteLeads:
    """The lead part of `SqliteStore` (a mixin: it uses the store's
    `database`, `listeners`, `query_bounds` and `changes_retention_s`)."""

    database: SqliteDatabase
    listeners: ChangeListeners
    query_bounds: QueryBounds
    changes_retention_s: int

    def subscribe_changes(self, listener: ChangeListener) -> None:
        """Call `listener(changes)` on the event loop after each commit that
        changed leads, in commit order."""
        self.listeners.add(listener)

    async def upsert_leads(self, org: str, items: list[LeadInput]) -> UpsertResult:
        """Insert or update leads by (org, source, person_id), or merge them
        into the org's lead of the same person (`store.lead_identity`); never
        duplicates. Leads whose fields do not change get no change entry."""
        if not items:
            return UpsertResult(0, 0, 0, [], [])

        def run(db: sqlite3.Connection) -> UpsertResult:
            rows = LeadRows(db, org)
            batch = rows.batch()
            matcher = LeadMatcher(rows.candidates(items), {item.source for item in items})
            plan = plan_upsert(items, matcher, batch)
            return batch.upsert_result(plan, matcher, rows.write(batch))

        return await self.database.write(run)

    async def update_lead(self, org: str, lead_id: str, fields: dict[str, Any]) -> Lead | None:
        """Change some fields of a lead (keys as in `LeadInput`); None if absent."""

        def run(db: sqlite3.Connection) -> Written:
            rows = LeadRows(db, org)
            existing = rows.by_id(lead_id)
            if existing is None:
                return Written(None, [])
            batch = rows.batch()
            lead = batch.update(existing, with_fields(existing, fields))
            return Written(lead, rows.write(batch))

        return (await self.database.write(run)).lead

    async def delete_lead(self, org: str, lead_id: str) -> bool:
        def run(db: sqlite3.Connection) -> Written:
            rows = LeadRows(db, org)
            existing = rows.by_id(lead_id)
            if existing is None:
                return Written(None, [])
            batch = rows.batch()
            batch.delete(existing)
            return Written(existing, rows.write(batch))

        return (await self.database.write(run)).lead is not None

    async def get_lead(self, org: str, lead_id: str) -> Lead | None:
        row = await self.database.read(
            lambda db: db.execute(
                f"SELECT {LEAD_COLUMNS} FROM leads WHERE org = ? AND id = ?", (org, lead_id)
            ).fetchone()
        )
        return lead_from_row(row) if row else None

    async def saved_by_person(
        self, org: str, source: str, person_ids: list[str]
    ) -> dict[str, Lead]:
        """The org's saved leads among these provider ids, by person id."""
        if not person_ids:
            return {}

        def run(db: sqlite3.Connection) -> dict[str, Lead]:
            found: dict[str, Lead] = {}
            for part in chunks(person_ids):
                marks = ",".join("?" * len(part))
                for row in db.execute(
                    f"SELECT {LEAD_COLUMNS} FROM leads WHERE org = ? AND source = ? "
                    f"AND person_id IN ({marks})",
                    (org, source, *part),
                ):
                    lead = lead_from_row(row)
                    found[lead.person_id] = lead
            return found

        return await self.database.read(run)

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
        page = KeysetPage.of_leads(sort, limit, cursor)
        column, order = page.field, "DESC" if page.descending else "ASC"
        lead_filter = filter or LeadFilter()
        # A too broad q stops here, before any read.
        terms = self.query_bounds.filter_terms(lead_filter)

        def run(db: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], int]:
            db.execute("BEGIN")  # one snapshot for the rows and the version
            try:
                with self._time_limited(db, terms):
                    where, params = lead_where(db, org, lead_filter, terms)
                    if page.after is not None:
                        where += f" AND ({column}, id) {'<' if page.descending else '>'} (?, ?)"
                        params += list(page.after)
                    sql = (
                        f"SELECT {LEAD_COLUMNS}, {column} FROM leads WHERE {where} "
                        f"ORDER BY {column} {order}, id {order} LIMIT ?"
                    )
                    rows = db.execute(sql, [*params, page.rows_to_read]).fetchall()
                return rows, org_version(db, org)
            finally:
                db.execute("COMMIT")

        rows, version = await self.database.read(run, search=terms is not None)
        rows, next_cursor = page.split(rows, lambda row: (row[-1], row[0]))
        return LeadPage([lead_from_row(row[:-1]) for row in rows], next_cursor, version)

    def iter_leads(
        self, org: str, filter: LeadFilter | None = None, *, page_size: int = 1000
    ) -> AsyncIterator[list[Lead]]:
        """Every matching lead, newest first, a keyset page at a time."""
        return lead_pages(self, org, filter, page_size)

    async def count_leads(self, org: str, filter: LeadFilter | None = None) -> int:
        lead_filter = filter or LeadFilter()
        terms = self.query_bounds.filter_terms(lead_filter)

        def run(db: sqlite3.Connection) -> int:
            with self._time_limited(db, terms):
                where, params = lead_where(db, org, lead_filter, terms)
                sql = f"SELECT count(*) FROM leads WHERE {where}"
                return int(db.execute(sql, params).fetchone()[0])

        return await self.database.read(run, search=terms is not None)

    async def lead_stats(self, org: str) -> LeadStats:
        row = await self.database.read(
            lambda db: db.execute(
                "SELECT total, with_email, with_phone, with_both FROM org_state WHERE org = ?",
                (org,),
            ).fetchone()
        )
        return LeadStats(*row) if row else LeadStats()

    async def current_version(self, org: str) -> int:
        return await self.database.read(lambda db: org_version(db, org))

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
            changes = [change_from_row(org, row) for row in rows]
            return ChangesSince(changes, changes[-1].version if changes else version, False)

        return await self.database.read(run)

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

        return await self.database.write(run)

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


def lead_where(
    db: sqlite3.Connection, org: str, f: LeadFilter, terms: SearchTerms | None
) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters of the org's leads matching `f`."""
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
                params.append("% " + like(term, prefix=True))
    if f.ids is not None:
        clauses.append(f"id IN ({','.join('?' * len(f.ids))})" if f.ids else "0")
        params.extend(f.ids)
    return " AND ".join(clauses), params


def _org_leads(db: sqlite3.Connection, org: str) -> int:
    row = db.execute("SELECT total FROM org_state WHERE org = ?", (org,)).fetchone()
    return row[0] if row else 0
