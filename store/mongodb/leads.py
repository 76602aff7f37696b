"""Leads: atomic writes with their versions, and keyset-paginated lists.

Versions. A lead write plans its changes in memory
(`store.lead_batch.LeadBatch`), reserves a block of versions with one
`find_one_and_update` `$inc` on the org's `org_state` document, then writes
the rows, the change log and the stats `$inc`.
- With transactions (a replica set or a sharded cluster, detected with
  `hello` at `open()`): all of it is one transaction
  (`with_transaction`, which retries transient errors). The `org_state`
  write is the point where two writers of one org meet: the second gets a
  write conflict and is retried from the start, so versions are gap-free
  and match the order in which rows were written.
- Without (a stand-alone server): the same writes, in that order, without
  a transaction. Versions stay unique and increasing (the `$inc` is
  atomic), and one process writes an org's leads one write at a time, so
  they are gap-free while writes succeed. A write that fails (or a process
  that dies) after its reservation leaves versions that no change document
  will ever fill: `changes_since` delivers changes only up to such a hole,
  and once the hole is older than `gap_grace_s` it answers `reset` so the
  client reloads. A failed write also recounts its org's stats from the
  rows. Two processes writing the same lead at once can commit rows in
  the other order than their versions; run a replica set (one node is
  enough) wherever more than one process writes.

Change listeners are called on the event loop after the write, in version
order per org: writes of one org are serialized within the process.
`list_leads` reads the org's version before its rows, so a page is never
older than the version it reports (replaying changes on top is harmless).

Lists use the indexes of `indexes` (ESR). Text search `q` means what
`store.lead_search` says (each query word prefixes a word of the lead): one
escaped regular expression per word, `" word"`, over `search_text` (the
lead's casefolded words, `lead_search_text`), checked along the sort index
like SQLite's LIKE fallback (no `$text` index needed).
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from pymongo import DeleteOne, InsertOne, ReplaceOne, ReturnDocument
from pymongo.errors import ExecutionTimeout

from leadstream.store.base import ChangeListener
from leadstream.store.errors import StoreError
from leadstream.store.lead_batch import LeadBatch, LeadRowWrite
from leadstream.store.lead_identity import LeadMatcher, input_keys, plan_upsert, with_fields
from leadstream.store.lead_search import SearchTerms
from leadstream.store.mongodb.changes import MongoChanges
from leadstream.store.mongodb.connection import ORG_LOCK_STRIPES, Session
from leadstream.store.mongodb.documents import (
    EMAIL,
    PHONE,
    Doc,
    change_doc,
    lead_doc,
    lead_from_doc,
)
from leadstream.store.mongodb.paging import find_page, split_page
from leadstream.store.paging import KeysetPage, lead_pages
from leadstream.store.records import (
    Change,
    Lead,
    LeadFilter,
    LeadInput,
    LeadPage,
    LeadStats,
    UpsertResult,
    iso_from_epoch,
)

T = TypeVar("T")

# `contact` values a lead list accepts, by (has_email, has_phone) filter.
CONTACT_FILTER: dict[tuple[bool, bool], Any] = {
    (True, False): {"$in": [EMAIL, EMAIL | PHONE]},
    (False, True): {"$in": [PHONE, EMAIL | PHONE]},
    (True, True): EMAIL | PHONE,
}


class MongoLeads(MongoChanges):
    """An org's leads: upserts that merge one person into one lead, edits,
    deletes, lists, counts and stats; every write logged with its version."""

    def subscribe_changes(self, listener: ChangeListener) -> None:
        """Call `listener(changes)` on the event loop after each write that
        changed leads, in version order for each org."""
        self._listeners.add(listener)

    async def _write_leads(
        self, org: str, work: Callable[[Session], Awaitable[tuple[T, list[Change]]]]
    ) -> T:
        """Run a lead write of `org` atomically, then tell the listeners."""
        lock = self._org_locks[zlib.crc32(org.encode()) % ORG_LOCK_STRIPES]
        async with lock:
            if self.transactions:
                result, changes = await self._atomically(work)
            else:
                try:
                    result, changes = await work(None)
                except BaseException:
                    # Some rows may be written: make the stats match them again.
                    await self._recount_stats(org)
                    raise
            self._listeners.notify(asyncio.get_running_loop(), changes)
        return result

    async def _apply(self, batch: LeadBatch, session: Session) -> list[Change]:
        """Write a planned batch: reserve its versions, then rows, change log, stats."""
        if not batch.steps:
            return []
        count = len(batch.steps)
        state = await self._collection("org_state").find_one_and_update(
            {"_id": batch.org},
            {"$inc": {"version": count}, "$set": {"reserved_at": time.time()}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        if state is None:  # an upsert returning the document after it never gives None
            raise StoreError(f"no version counter for org {batch.org!r}")
        first = state["version"] - count + 1
        # Stamped after the reservation: a change's `at` is never earlier than
        # the reservation of any version below it (see `changes_since`).
        now = time.time()
        changes, writes = batch.stamped(first, iso_from_epoch(now))
        if writes:
            rows = [_row_operation(batch.org, write) for write in writes]
            await self._collection("leads").bulk_write(rows, ordered=True, session=session)
        await self._collection("changes").insert_many(
            [change_doc(change, now) for change in changes], ordered=True, session=session
        )
        await self._collection("org_state").update_one(
            {"_id": batch.org}, {"$inc": batch.stats_delta()}, session=session
        )
        return changes

    async def _recount_stats(self, org: str) -> None:
        """Set an org's stats from its rows (only after a failed write without
        a transaction; requests never count)."""
        counts = {mask: 0 for mask in range(4)}
        async for row in await self._collection("leads").aggregate(
            [{"$match": {"org": org}}, {"$group": {"_id": "$contact", "n": {"$sum": 1}}}]
        ):
            counts[row["_id"]] = row["n"]
        await self._collection("org_state").update_one(
            {"_id": org},
            {
                "$set": {
                    "total": sum(counts.values()),
                    "with_email": counts[EMAIL] + counts[EMAIL | PHONE],
                    "with_phone": counts[PHONE] + counts[EMAIL | PHONE],
                    "with_both": counts[EMAIL | PHONE],
                }
            },
            upsert=True,
        )

    async def upsert_leads(self, org: str, items: list[LeadInput]) -> UpsertResult:
        """Insert or update leads by (org, source, person_id), or merge them
        into the org's lead of the same person (`store.lead_identity`); never
        duplicates. Leads whose fields do not change get no change entry."""
        if not items:
            return UpsertResult(0, 0, 0, [], [])

        async def work(session: Session) -> tuple[UpsertResult, list[Change]]:
            batch = LeadBatch(org)
            candidates = await self._lead_candidates(org, items, session)
            matcher = LeadMatcher(candidates, {item.source for item in items})
            plan = plan_upsert(items, matcher, batch)
            changes = await self._apply(batch, session)
            return batch.upsert_result(plan, matcher, changes), changes

        return await self._write_leads(org, work)

    async def update_lead(self, org: str, lead_id: str, fields: dict[str, Any]) -> Lead | None:
        """Change some fields of a lead (keys as in `LeadInput`); None if absent."""

        async def work(session: Session) -> tuple[Lead | None, list[Change]]:
            existing = await self._stored_lead(org, lead_id, session)
            if existing is None:
                return None, []
            batch = LeadBatch(org)
            lead = batch.update(existing, with_fields(existing, fields))
            changes = await self._apply(batch, session)
            return batch.final(lead), changes

        return await self._write_leads(org, work)

    async def delete_lead(self, org: str, lead_id: str) -> bool:
        async def work(session: Session) -> tuple[bool, list[Change]]:
            existing = await self._stored_lead(org, lead_id, session)
            if existing is None:
                return False, []
            batch = LeadBatch(org)
            batch.delete(existing)
            return True, await self._apply(batch, session)

        return await self._write_leads(org, work)

    async def _lead_candidates(
        self, org: str, items: list[LeadInput], session: Session
    ) -> list[Lead]:
        """The stored leads these items may go to: those of the same (source,
        person_id), and those of another source sharing an identity key (one
        query; each branch of its `$or` on its index)."""
        by_source: dict[str, set[str]] = {}
        keys_by_source: dict[str, set[str]] = {}
        for item in items:
            by_source.setdefault(item.source, set()).add(item.person_id)
            keys_by_source.setdefault(item.source, set()).update(input_keys(item))
        branches: list[Doc] = [
            {"source": source, "person_id": {"$in": sorted(ids)}}
            for source, ids in by_source.items()
        ]
        branches += [
            {"identity_keys": {"$in": sorted(keys)}, "source": {"$ne": source}}
            for source, keys in keys_by_source.items()
            if keys
        ]
        query = {"org": org, "$or": branches}
        docs = await self._collection("leads").find(query, session=session).to_list(None)
        return [lead_from_doc(doc) for doc in docs]

    async def get_lead(self, org: str, lead_id: str) -> Lead | None:
        return await self._stored_lead(org, lead_id)

    async def _stored_lead(self, org: str, lead_id: str, session: Session = None) -> Lead | None:
        doc = await self._collection("leads").find_one(
            {"_id": lead_id, "org": org}, session=session
        )
        return lead_from_doc(doc) if doc else None

    async def saved_by_person(
        self, org: str, source: str, person_ids: list[str]
    ) -> dict[str, Lead]:
        """The org's saved leads among these provider ids, by person id."""
        found: dict[str, Lead] = {}
        for start in range(0, len(person_ids), 500):
            part = person_ids[start : start + 500]
            query = {"org": org, "source": source, "person_id": {"$in": part}}
            async for doc in self._collection("leads").find(query):
                lead = lead_from_doc(doc)
                found[lead.person_id] = lead
        return found

    async def list_leads(
        self,
        org: str,
        *,
        sort: str = "createdAt:desc",
        limit: int = 50,
        cursor: str | None = None,
        filter: LeadFilter | None = None,
    ) -> LeadPage:
        """One page of the org's leads, keyset-paginated (no skips)."""
        page = KeysetPage.of_leads(sort, limit, cursor)
        lead_filter = filter or LeadFilter()
        # A too broad q stops here, before any read.
        terms = self.query_bounds.filter_terms(lead_filter)
        query = _lead_query(org, lead_filter, terms)
        async with self._list_session() as session:
            # The version before the rows: see the module docstring.
            version = await self._version(org, session)
            docs = await self._list_rows(query, page, lead_filter, terms, session)
        rows, next_cursor = split_page(page, docs)
        return LeadPage([lead_from_doc(doc) for doc in rows], next_cursor, version)

    async def _list_rows(
        self,
        query: Doc,
        page: KeysetPage,
        lead_filter: LeadFilter,
        terms: SearchTerms | None,
        session: Session,
    ) -> list[Doc]:
        found = find_page(self._listing("leads"), query, page, session=session)
        if not lead_filter.company and lead_filter.ids is None:
            # Equality and sort only: the ESR index. A company or ids filter
            # may be served better by another index, so the planner picks.
            contact = lead_filter.has_email or lead_filter.has_phone
            index = f"list_{page.field}"
            found = found.hint(f"{index}_contact" if contact else index)
        if terms is not None:
            found = found.max_time_ms(self.query_bounds.time_ms)
        try:
            return await found.to_list(None)
        except ExecutionTimeout:
            raise self.query_bounds.too_slow() from None

    def iter_leads(
        self, org: str, filter: LeadFilter | None = None, *, page_size: int = 1000
    ) -> AsyncIterator[list[Lead]]:
        """Every matching lead, newest first, a keyset page at a time."""
        return lead_pages(self, org, filter, page_size)

    async def count_leads(self, org: str, filter: LeadFilter | None = None) -> int:
        lead_filter = filter or LeadFilter()
        terms = self.query_bounds.filter_terms(lead_filter)
        options: dict[str, Any] = (
            {"maxTimeMS": self.query_bounds.time_ms} if terms is not None else {}
        )
        try:
            return await self._listing("leads").count_documents(
                _lead_query(org, lead_filter, terms), **options
            )
        except ExecutionTimeout:
            raise self.query_bounds.too_slow() from None

    async def lead_stats(self, org: str) -> LeadStats:
        state = await self._listing("org_state").find_one({"_id": org})
        if state is None:
            return LeadStats()
        return LeadStats(
            state.get("total", 0),
            state.get("with_email", 0),
            state.get("with_phone", 0),
            state.get("with_both", 0),
        )


def _lead_query(org: str, f: LeadFilter, terms: SearchTerms | None) -> Doc:
    query: Doc = {"org": org}
    if f.has_email or f.has_phone:
        query["contact"] = CONTACT_FILTER[(f.has_email, f.has_phone)]
    if f.company:
        query["company_key"] = f.company.casefold()
    if f.tag:
        query["tags"] = f.tag
    if terms is not None:
        # Each term must start a word; a query without words matches nothing.
        words = [{"search_text": {"$regex": " " + re.escape(term)}} for term in terms.all]
        query["$and"] = words or [{"search_text": {"$in": []}}]
    if f.ids is not None:
        query["_id"] = {"$in": list(f.ids)}
    return query


def _row_operation(org: str, write: LeadRowWrite) -> InsertOne[Doc] | ReplaceOne[Doc] | DeleteOne:
    """The bulk write that stores one lead's row as `write` leaves it."""
    if write.after is None:
        return DeleteOne({"_id": write.lead_id, "org": org})
    if write.before is None:
        return InsertOne(lead_doc(write.after))
    return ReplaceOne({"_id": write.lead_id, "org": org}, lead_doc(write.after))
