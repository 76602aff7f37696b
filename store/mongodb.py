"""The scale-out store: MongoDB through PyMongo's async API (`AsyncMongoClient`).

Configuration comes from the URL (`mongodb://` or `mongodb+srv://`), with
PyMongo's own option names: pool (`maxPoolSize`, `minPoolSize`,
`maxIdleTimeMS`, `waitQueueTimeoutMS`), timeouts (`connectTimeoutMS`,
`serverSelectionTimeoutMS`, `socketTimeoutMS`, `timeoutMS`), `retryWrites`
and `retryReads` (both on unless the URL says `false`), `compressors`
(`zlib` is built in; `zstd` and `snappy` need their PyPI packages), `w`,
`readPreference`, TLS and authentication. The database is the URL's path
(`mongodb://host/leadstream`), `leadstream` when it names none. The keyword
arguments of `MongoStore` set the same options from code and win over the URL.

Collections, documents in snake_case like the SQLite columns:
`leads`, `org_state` (one per org: version counter, stats, prune mark),
`changes`, `people`, `conversations`, `messages`, `searches`, `jobs`.
`open()` creates every index idempotently (same name, same keys). Each lead
list query follows the ESR rule (equality, sort, range): equality on `org`
(and on `contact`, a 0-3 mask of email=1 / phone=2, when `hasEmail` or
`hasPhone` filters: an `$in` of mask values, which the server walks as one
merge-sorted scan per value), then the sort key and `_id`, and the cursor's
range on that same sort key. So every sort of `store.cursors.SORTS` has an
index `(org, key, _id)` and one `(org, contact, key, _id)`. Text search
`q` means what `store.lead_search` says (each query word prefixes a word of
the lead): one escaped regular expression per word, `" word"`, over
`search_text` (the lead's casefolded words, `lead_search_text`), checked
along the sort index like SQLite's LIKE fallback (no `$text` index needed).
Name and company sorts use casefolded `name_key` and `company_key`.
One person, one lead (`store.lead_identity`): each lead carries its
`identity_keys` (normalised emails, phones, LinkedIn URL), a multikey index
`(org, identity_keys, source)` finds the leads a bulk save may merge into,
and `open()` fills the keys of leads written before they existed.

Sharding: leads are ready to be sharded on the hashed org,
`sh.shardCollection("<db>.leads", {org: "hashed"})`: the `org_hashed`
index exists, the unique (org, source, person_id) index starts with the
shard key field, and every lead query and write names its org, so each one
goes to a single shard. `changes` can be sharded the same way (its unique
index is (org, version)).

Versions. A lead write plans its changes in memory, reserves a block of
versions with one `find_one_and_update` `$inc` on the org's `org_state`
document, then writes the rows, the change log and the stats `$inc`.
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
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from pymongo import (
    AsyncMongoClient,
    DeleteOne,
    IndexModel,
    InsertOne,
    ReplaceOne,
    ReturnDocument,
    UpdateOne,
)
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, CollectionInvalid, DuplicateKeyError, ExecutionTimeout
from pymongo.read_preferences import Primary, _ServerMode

from leadstream.store.base import ChangeListener
from leadstream.store.cursors import SORTS, decode_cursor, encode_cursor
from leadstream.store.errors import StoreError
from leadstream.store.lead_identity import (
    LeadMatcher,
    identity_keys,
    input_keys,
    lead_keys,
    new_lead,
    plan_upsert,
    with_fields,
)
from leadstream.store.lead_search import QueryBounds, SearchTerms, lead_search_text
from leadstream.store.records import (
    Change,
    ChangeOp,
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

# Reads and conditional writes of one usage row before giving up (each lost
# race means another reservation or settlement got through).
USAGE_UPDATE_TRIES = 50

T = TypeVar("T")
P = ParamSpec("P")
Doc = dict[str, Any]
Session = AsyncClientSession | None

DEFAULT_DATABASE = "leadstream"
ORG_LOCK_STRIPES = 64
DUPLICATE_KEY = 11000
SORT_KEYS = sorted({key for key, _ in SORTS.values()})
EMAIL, PHONE = 1, 2  # bits of a lead's `contact` mask
IDENTITY_INDEX = "org_identity_keys"

# `contact` values a lead list accepts, by (has_email, has_phone) filter.
CONTACT_FILTER: dict[tuple[bool, bool], Any] = {
    (True, False): {"$in": [EMAIL, EMAIL | PHONE]},
    (False, True): {"$in": [PHONE, EMAIL | PHONE]},
    (True, True): EMAIL | PHONE,
}

COLLECTIONS = ("leads", "org_state", "changes", "people", "conversations", "messages", "searches", "jobs")  # fmt: skip

INDEXES: dict[str, list[IndexModel]] = {
    "leads": [
        IndexModel(
            [("org", 1), ("source", 1), ("person_id", 1)], name="org_source_person", unique=True
        ),
        IndexModel([("org", "hashed")], name="org_hashed"),
        # One person, one lead: a new lead finds the org's lead of the same
        # person by a normalised email, phone or LinkedIn URL (multikey), of
        # another source than its own (`store.lead_identity`).
        IndexModel([("org", 1), ("identity_keys", 1), ("source", 1)], name=IDENTITY_INDEX),
        *(IndexModel([("org", 1), (key, 1), ("_id", 1)], name=f"list_{key}") for key in SORT_KEYS),
        *(
            IndexModel(
                [("org", 1), ("contact", 1), (key, 1), ("_id", 1)], name=f"list_{key}_contact"
            )
            for key in SORT_KEYS
        ),
    ],
    "changes": [
        IndexModel([("org", 1), ("version", 1)], name="org_version", unique=True),
        IndexModel([("at_epoch", 1)], name="at_epoch"),
    ],
    "people": [
        IndexModel([("name_key", 1)], name="name_key"),
        IndexModel([("company_key", 1)], name="company_key"),
        IndexModel([("industry", 1)], name="industry"),
        IndexModel([("linkedin", 1)], name="linkedin"),
    ],
    "conversations": [
        IndexModel(
            [("org", 1), ("user", 1), ("updated_at", 1), ("_id", 1)], name="org_user_updated"
        )
    ],
    "messages": [
        IndexModel(
            [("org", 1), ("conversation_id", 1), ("created_at", 1), ("_id", 1)],
            name="org_conversation_created",
        ),
        IndexModel(
            [("org", 1), ("user", 1), ("client_message_id", 1)],
            name="org_user_client_message",
            unique=True,
            partialFilterExpression={"client_message_id": {"$type": "string"}},
        ),
    ],
    # Expired result sets are also filtered out on read: the TTL monitor runs once a minute.
    "searches": [
        IndexModel([("expires_at", 1)], name="expires_at", expireAfterSeconds=0),
        IndexModel([("org", 1), ("created_at", 1), ("_id", 1)], name="org_created"),
    ],
    "jobs": [
        IndexModel(
            [("org", 1), ("user", 1), ("status", 1), ("updated_at", 1)], name="org_user_status"
        )
    ],
}


def _observed(
    method: Callable[Concatenate[MongoStore, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[MongoStore, P], Coroutine[Any, Any, T]]:
    """Report each call's duration to the store's `on_call`, under the method's name."""
    name = method.__name__

    @functools.wraps(method)
    async def observed(self: MongoStore, *args: P.args, **kwargs: P.kwargs) -> T:
        started = time.perf_counter()
        try:
            return await method(self, *args, **kwargs)
        finally:
            if self.on_call is not None:
                self.on_call(name, time.perf_counter() - started)

    return observed


class MongoStore:
    """The store on a MongoDB database. See the module docstring for the
    configuration, the indexes and how versions stay gap-free.

    :param url: `mongodb://...` or `mongodb+srv://...`, with PyMongo's options.
    :param changes_retention_s: how long the change log keeps entries.
    :param search_ttl_s: how long a search result set can be referred to.
    :param query_bounds: what one search `q` may cost (terms, `maxTimeMS`).
    :param search_rows_quota: result rows an org's stored searches may hold;
        a new search past it drops the org's oldest ones first.
    :param database: the database; default: the URL's path, else `leadstream`.
    :param transactions: write leads in transactions; `None` asks the server
        at `open()` (yes on a replica set or a sharded cluster).
    :param gap_grace_s: without transactions, how long a hole in the change
        log may wait for its writer before `changes_since` answers `reset`.
    :param max_pool_size: connections per server (`maxPoolSize`).
    :param min_pool_size: connections kept open (`minPoolSize`).
    :param connect_timeout_ms: `connectTimeoutMS`.
    :param server_selection_timeout_ms: `serverSelectionTimeoutMS`.
    :param timeout_ms: a deadline for each operation, retries included (`timeoutMS`).
    :param retry_writes: `retryWrites`.
    :param compressors: e.g. `"zstd,zlib"` (`compressors`).
    """

    backend = "mongodb"

    def __init__(
        self,
        url: str,
        *,
        changes_retention_s: int = 7 * 24 * 3600,
        search_ttl_s: int = 24 * 3600,
        query_bounds: QueryBounds | None = None,
        search_rows_quota: int = 20_000,
        database: str | None = None,
        transactions: bool | None = None,
        gap_grace_s: float = 30.0,
        max_pool_size: int | None = None,
        min_pool_size: int | None = None,
        connect_timeout_ms: int | None = None,
        server_selection_timeout_ms: int | None = None,
        timeout_ms: int | None = None,
        retry_writes: bool | None = None,
        compressors: str | None = None,
    ) -> None:
        if not url.startswith(("mongodb://", "mongodb+srv://")):
            raise StoreError(f"not a mongodb URL: {url!r}")
        self.url = url
        self.changes_retention_s = changes_retention_s
        self.search_ttl_s = search_ttl_s
        self.query_bounds = query_bounds or QueryBounds()
        self.search_rows_quota = search_rows_quota
        self.gap_grace_s = gap_grace_s
        self.transactions = transactions
        self._database_name = database
        self._client_options: dict[str, Any] = {
            option: value
            for option, value in (
                ("maxPoolSize", max_pool_size),
                ("minPoolSize", min_pool_size),
                ("connectTimeoutMS", connect_timeout_ms),
                ("serverSelectionTimeoutMS", server_selection_timeout_ms),
                ("timeoutMS", timeout_ms),
                ("retryWrites", retry_writes),
                ("compressors", compressors),
            )
            if value is not None
        }
        self._client: AsyncMongoClient[Doc] | None = None
        self._db: AsyncDatabase[Doc] | None = None
        #: where lists, search and stats read: the URL's `readPreference` (after `open()`).
        self.list_read_preference: _ServerMode = Primary()
        self._listeners: list[ChangeListener] = []
        #: called with (operation, seconds) after each store call (metrics).
        self.on_call: Callable[[str, float], None] | None = None
        # Lead writes of one org go one at a time in this process (listeners
        # then see versions in order); striped so the locks stay bounded.
        self._org_locks = [asyncio.Lock() for _ in range(ORG_LOCK_STRIPES)]

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        """Connect, find out whether the server has transactions, and create
        the indexes (idempotent)."""
        if self._client is None:
            self._client = AsyncMongoClient(self.url, **self._client_options)
            # Everything reads the primary but lists, search and stats, which
            # may use the URL's `readPreference` (see `_listing`).
            self.list_read_preference = self._client.read_preference
            if self._database_name:
                self._db = self._client.get_database(self._database_name, read_preference=Primary())
            else:
                self._db = self._client.get_default_database(
                    DEFAULT_DATABASE, read_preference=Primary()
                )
        if self.transactions is None:
            hello = await self._client.admin.command("hello")
            self.transactions = "setName" in hello or hello.get("msg") == "isdbgrid"
        # Made up front: a transaction on a sharded cluster cannot create them.
        existing = set(await self.db.list_collection_names())
        for name in COLLECTIONS:
            if name not in existing:
                # Another process may make it between the listing and here: fine.
                with contextlib.suppress(CollectionInvalid):
                    await self.db.create_collection(name)
        had_identity_index = IDENTITY_INDEX in await self.db["leads"].index_information()
        for name, models in INDEXES.items():
            await self.db[name].create_indexes(models)
        if not had_identity_index:
            await self._add_identity_keys()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._db = None

    @_observed
    async def ping(self) -> None:
        await self.db.command("ping")

    def subscribe_changes(self, listener: ChangeListener) -> None:
        """Call `listener(changes)` on the event loop after each write that
        changed leads, in version order for each org."""
        self._listeners.append(listener)

    @property
    def client(self) -> AsyncMongoClient[Doc]:
        """The client (after `open()`)."""
        if self._client is None:
            raise StoreError("the MongoDB store is not open")
        return self._client

    @property
    def db(self) -> AsyncDatabase[Doc]:
        """The database (after `open()`)."""
        if self._db is None:
            raise StoreError("the MongoDB store is not open")
        return self._db

    def _collection(self, name: str) -> AsyncCollection[Doc]:
        return self.db[name]

    def _listing(self, name: str) -> AsyncCollection[Doc]:
        """The collection with the URL's read preference (lists, search, stats)."""
        return self.db[name].with_options(read_preference=self.list_read_preference)

    @contextlib.asynccontextmanager
    async def _list_session(self) -> AsyncIterator[Session]:
        """A causally consistent session when lists may read a secondary: a
        page's rows are then at least as new as its version, read on the primary."""
        if self.list_read_preference == Primary():
            yield None
            return
        async with self.client.start_session(causal_consistency=True) as session:
            yield session

    # -- atomic writes ---------------------------------------------------------

    async def _atomically(self, work: Callable[[Session], Awaitable[T]]) -> T:
        """Run `work` in a transaction when the server has them (retried on
        transient errors, so `work` must only write through its session);
        else run it once without one."""
        if not self.transactions:
            return await work(None)
        async with self.client.start_session() as session:
            return await session.with_transaction(work, read_preference=Primary())

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
            if changes and self._listeners:
                loop = asyncio.get_running_loop()
                for listener in self._listeners:
                    loop.call_soon(listener, list(changes))
        return result

    async def _apply(self, batch: _LeadBatch, session: Session) -> list[Change]:
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
        changes, rows = batch.stamped(first, iso_from_epoch(now))
        if rows:
            await self._collection("leads").bulk_write(rows, ordered=True, session=session)
        await self._collection("changes").insert_many(
            [_change_doc(change, now) for change in changes], ordered=True, session=session
        )
        await self._collection("org_state").update_one(
            {"_id": batch.org}, {"$inc": batch.stats_delta()}, session=session
        )
        return changes

    async def _add_identity_keys(self) -> None:
        """Give leads written before one person, one lead their
        `identity_keys` (runs when `open()` makes the index, so once; a lead
        rewritten meanwhile already has them and is left alone)."""
        leads = self._collection("leads")
        missing: Doc = {"identity_keys": {"$exists": False}}
        updates: list[UpdateOne] = []
        fields = {"org": 1, "emails": 1, "phones": 1, "linkedin": 1}
        async for doc in leads.find(missing, projection=fields):
            contacts = (tuple(doc.get("emails") or ()), tuple(doc.get("phones") or ()))
            keys = identity_keys(*contacts, doc.get("linkedin"))
            updates.append(
                UpdateOne(
                    {"_id": doc["_id"], "org": doc["org"], **missing},
                    {"$set": {"identity_keys": list(keys)}},
                )
            )
            if len(updates) == 1000:
                await leads.bulk_write(updates, ordered=False)
                updates = []
        if updates:
            await leads.bulk_write(updates, ordered=False)

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

    # -- people directory ----------------------------------------------------

    @_observed
    async def count_people(self) -> int:
        return await self._collection("people").count_documents({})

    @_observed
    async def add_people(self, people: Iterable[Person]) -> int:
        """Insert directory entries (existing person ids are left alone)."""
        docs = [_person_doc(p) for p in people]
        added = 0
        for start in range(0, len(docs), 1000):
            part = docs[start : start + 1000]
            try:
                added += len(
                    (await self._collection("people").insert_many(part, ordered=False)).inserted_ids
                )
            except BulkWriteError as error:
                details = error.details
                if any(e.get("code") != DUPLICATE_KEY for e in details.get("writeErrors", [])):
                    raise
                added += details.get("nInserted", 0)
        return added

    async def stream_people(
        self, query: PeopleQuery, *, limit: int, chunk_size: int
    ) -> AsyncIterator[list[Person]]:
        """Matching directory people, at most `limit`, a chunk per batch the
        server sends (`batch_size` is the chunk size)."""
        if limit <= 0:  # a MongoDB limit of 0 means none
            return
        cursor = (
            self._collection("people")
            .find(_people_query(query))
            .limit(limit)
            .batch_size(chunk_size)
        )
        try:
            chunk: list[Person] = []
            async for doc in cursor:
                chunk.append(_person(doc))
                if len(chunk) == chunk_size:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
        finally:
            await cursor.close()

    @_observed
    async def get_person(self, person_id: str) -> Person | None:
        doc = await self._collection("people").find_one({"_id": person_id})
        return _person(doc) if doc else None

    @_observed
    async def find_people(
        self, *, name: str | None, company: str | None, linkedin: str | None, limit: int = 5
    ) -> list[Person]:
        query: Doc = {}
        if linkedin:
            query["linkedin"] = linkedin.rstrip("/")
        if name:
            query["name_key"] = {"$regex": "^" + re.escape(name.casefold())}
        if company:
            query["company_key"] = {"$regex": "^" + re.escape(company.casefold())}
        if not query or limit <= 0:
            return []
        docs = await self._collection("people").find(query).limit(limit).to_list(None)
        return [_person(doc) for doc in docs]

    # -- leads ---------------------------------------------------------------

    @_observed
    async def upsert_leads(self, org: str, items: list[LeadInput]) -> UpsertResult:
        """Insert or update leads by (org, source, person_id), or merge them
        into the org's lead of the same person (`store.lead_identity`); never
        duplicates. Leads whose fields do not change get no change entry."""
        if not items:
            return UpsertResult(0, 0, 0, [], [])

        async def work(session: Session) -> tuple[UpsertResult, list[Change]]:
            batch = _LeadBatch(org)
            candidates = await self._lead_candidates(org, items, session)
            matcher = LeadMatcher(candidates, {item.source for item in items})
            plan = plan_upsert(items, matcher, batch)
            changes = await self._apply(batch, session)
            leads = [batch.final(matcher.current(lead_id)) for lead_id in plan.lead_ids]
            result = UpsertResult(
                plan.saved,
                plan.updated,
                plan.unchanged,
                changes,
                [lead for lead in leads if lead is not None],
            )
            return result, changes

        return await self._write_leads(org, work)

    @_observed
    async def update_lead(self, org: str, lead_id: str, fields: dict[str, Any]) -> Lead | None:
        """Change some fields of a lead (keys as in `LeadInput`); None if absent."""

        async def work(session: Session) -> tuple[Lead | None, list[Change]]:
            doc = await self._collection("leads").find_one(
                {"_id": lead_id, "org": org}, session=session
            )
            if doc is None:
                return None, []
            existing = _lead(doc)
            batch = _LeadBatch(org)
            lead = batch.update(existing, with_fields(existing, fields))
            changes = await self._apply(batch, session)
            return batch.final(lead), changes

        return await self._write_leads(org, work)

    @_observed
    async def delete_lead(self, org: str, lead_id: str) -> bool:
        async def work(session: Session) -> tuple[bool, list[Change]]:
            doc = await self._collection("leads").find_one(
                {"_id": lead_id, "org": org}, session=session
            )
            if doc is None:
                return False, []
            existing = _lead(doc)
            batch = _LeadBatch(org)
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
        return [_lead(doc) for doc in docs]

    @_observed
    async def get_lead(self, org: str, lead_id: str) -> Lead | None:
        doc = await self._collection("leads").find_one({"_id": lead_id, "org": org})
        return _lead(doc) if doc else None

    @_observed
    async def saved_by_person(
        self, org: str, source: str, person_ids: list[str]
    ) -> dict[str, Lead]:
        """The org's saved leads among these provider ids, by person id."""
        found: dict[str, Lead] = {}
        for start in range(0, len(person_ids), 500):
            part = person_ids[start : start + 500]
            query = {"org": org, "source": source, "person_id": {"$in": part}}
            async for doc in self._collection("leads").find(query):
                lead = _lead(doc)
                found[lead.person_id] = lead
        return found

    @_observed
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
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        key, descending = SORTS[sort]
        lead_filter = filter or LeadFilter()
        terms = self._search_terms(lead_filter)  # a too broad q stops here, before any read
        query = _lead_query(org, lead_filter, terms)
        if cursor is not None:
            value, last_id = decode_cursor(cursor, sort)
            # The range on the sort key bounds the index scan; the $or breaks ties by id.
            after = "$lt" if descending else "$gt"
            query["$and"] = [
                *query.get("$and", []),
                {key: {"$lte" if descending else "$gte": value}},
                {"$or": [{key: {after: value}}, {"_id": {after: last_id}}]},
            ]
        direction = -1 if descending else 1
        async with self._list_session() as session:
            # The version before the rows: see the module docstring.
            version = await self._version(org, session)
            docs = await self._list_rows(query, key, direction, limit, lead_filter, terms, session)
        next_cursor = None
        if len(docs) > limit:
            docs = docs[:limit]
            next_cursor = encode_cursor(sort, docs[-1][key], docs[-1]["_id"])
        return LeadPage([_lead(doc) for doc in docs], next_cursor, version)

    async def _list_rows(
        self,
        query: Doc,
        key: str,
        direction: int,
        limit: int,
        lead_filter: LeadFilter,
        terms: SearchTerms | None,
        session: Session,
    ) -> list[Doc]:
        found = (
            self._listing("leads")
            .find(query, session=session)
            .sort([(key, direction), ("_id", direction)])
            .limit(limit + 1)
        )
        if not lead_filter.company and lead_filter.ids is None:
            # Equality and sort only: the ESR index. A company or ids filter
            # may be served better by another index, so the planner picks.
            contact = lead_filter.has_email or lead_filter.has_phone
            found = found.hint(f"list_{key}_contact" if contact else f"list_{key}")
        if terms is not None:
            found = found.max_time_ms(self.query_bounds.time_ms)
        try:
            return await found.to_list(None)
        except ExecutionTimeout:
            raise self.query_bounds.too_slow() from None

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

    @_observed
    async def count_leads(self, org: str, filter: LeadFilter | None = None) -> int:
        lead_filter = filter or LeadFilter()
        terms = self._search_terms(lead_filter)
        options = {"maxTimeMS": self.query_bounds.time_ms} if terms is not None else {}
        try:
            return await self._listing("leads").count_documents(
                _lead_query(org, lead_filter, terms), **options
            )
        except ExecutionTimeout:
            raise self.query_bounds.too_slow() from None

    def _search_terms(self, f: LeadFilter) -> SearchTerms | None:
        return self.query_bounds.terms(f.q) if f.q is not None else None

    @_observed
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

    @_observed
    async def current_version(self, org: str) -> int:
        return await self._version(org)

    async def _version(self, org: str, session: Session = None) -> int:
        state = await self._collection("org_state").find_one(
            {"_id": org}, {"version": 1}, session=session
        )
        return state.get("version", 0) if state else 0

    @_observed
    async def changes_since(self, org: str, since: int, *, limit: int = 1000) -> ChangesSince:
        """Changes after version `since`, oldest first, without holes. `reset`
        is true when the log no longer reaches back to `since` (the client
        must reload): pruned, or a hole older than `gap_grace_s`."""
        state = await self._collection("org_state").find_one({"_id": org}) or {}
        version = state.get("version", 0)
        if since < state.get("pruned_through", 0) or since > version:
            return ChangesSince([], version, True)
        if limit <= 0:  # a MongoDB limit of 0 means none
            return ChangesSince([], version, False)
        docs = (
            await self._collection("changes")
            .find({"org": org, "version": {"$gt": since}})
            .sort("version", 1)
            .limit(limit)
            .to_list(None)
        )
        changes: list[Change] = []
        for doc in docs:
            if doc["version"] != since + len(changes) + 1:
                break  # a hole: deliver up to it
            changes.append(_change(doc))
        if changes:
            return ChangesSince(changes, changes[-1].version, False)
        if version == since:
            return ChangesSince([], version, False)
        # A hole right after `since`. Its version was reserved before the next
        # change was stamped (or before the last reservation, if none follows).
        reserved_by = docs[0]["at_epoch"] if docs else state.get("reserved_at", 0.0)
        if time.time() - reserved_by > self.gap_grace_s:
            return ChangesSince([], version, True)  # its writer failed: reload
        return ChangesSince([], since, False)  # still being written

    @_observed
    async def prune_changes(self, *, now: float | None = None) -> int:
        """Drop change-log entries older than the retention window."""
        cutoff = (time.time() if now is None else now) - self.changes_retention_s
        changes = self._collection("changes")
        pruned = await (
            await changes.aggregate(
                [
                    {"$match": {"at_epoch": {"$lt": cutoff}}},
                    {"$group": {"_id": "$org", "through": {"$max": "$version"}}},
                ]
            )
        ).to_list(None)
        removed = 0
        for row in pruned:
            org, through = row["_id"], row["through"]
            # Mark first: a reader never finds entries missing without the mark.
            await self._collection("org_state").update_one(
                {"_id": org}, {"$max": {"pruned_through": through}}, upsert=True
            )
            result = await changes.delete_many({"org": org, "version": {"$lte": through}})
            removed += result.deleted_count
        return removed

    # -- conversations and messages ------------------------------------------

    @_observed
    async def create_conversation(self, org: str, user: str, title: str) -> Conversation:
        now = iso_now()
        conv = Conversation(new_id("cv"), org, user, title[:120], now, now)
        await self._collection("conversations").insert_one(
            {
                "_id": conv.id,
                "org": org,
                "user": user,
                "title": conv.title,
                "created_at": now,
                "updated_at": now,
            }
        )
        return conv

    @_observed
    async def get_conversation(self, org: str, conversation_id: str) -> Conversation | None:
        doc = await self._collection("conversations").find_one({"_id": conversation_id, "org": org})
        return _conversation(doc) if doc else None

    @_observed
    async def list_conversations(
        self, org: str, user: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Conversation], str | None]:
        query: Doc = {"org": org, "user": user}
        if cursor is not None:
            value, last_id = decode_cursor(cursor, "conversations")
            query["$and"] = [
                {"updated_at": {"$lte": value}},
                {"$or": [{"updated_at": {"$lt": value}}, {"_id": {"$lt": last_id}}]},
            ]
        docs = (
            await self._collection("conversations")
            .find(query)
            .sort([("updated_at", -1), ("_id", -1)])
            .limit(limit + 1)
            .to_list(None)
        )
        items = [_conversation(doc) for doc in docs[:limit]]
        next_cursor = None
        if len(docs) > limit:
            next_cursor = encode_cursor("conversations", items[-1].updated_at, items[-1].id)
        return items, next_cursor

    @_observed
    async def start_exchange(
        self, conversation: Conversation, text: str, client_message_id: str | None
    ) -> tuple[Message, Message, bool]:
        """Store a user message and the (empty, streaming) assistant reply to it.

        Returns (user message, reply, created). With a `client_message_id`
        seen before for this user, nothing is stored and the earlier pair is
        returned with `created` false (`chat:send` is idempotent); the unique
        index on it settles two sends that race."""
        if client_message_id is not None:
            earlier = await self._exchange(conversation, client_message_id)
            if earlier is not None:
                return earlier
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

        async def work(session: Session) -> None:
            await self._collection("messages").insert_many(
                [_message_doc(user_msg), _message_doc(reply)], ordered=True, session=session
            )
            await self._collection("conversations").update_one(
                {"_id": conversation.id, "org": conversation.org},
                {"$set": {"updated_at": now}},
                session=session,
            )

        try:
            await self._atomically(work)
        except (DuplicateKeyError, BulkWriteError) as error:
            if client_message_id is None or not _is_duplicate(error):
                raise
            earlier = await self._exchange(conversation, client_message_id)
            if earlier is None:
                raise
            return earlier
        return user_msg, reply, True

    async def _exchange(
        self, conversation: Conversation, client_message_id: str
    ) -> tuple[Message, Message, bool] | None:
        messages = self._collection("messages")
        doc = await messages.find_one(
            {
                "org": conversation.org,
                "user": conversation.user,
                "client_message_id": client_message_id,
            }
        )
        if doc is None:
            return None
        reply = await messages.find_one({"_id": doc["reply_id"], "org": conversation.org})
        if reply is None:
            raise StoreError(f"message {doc['_id']} has no reply {doc['reply_id']}")
        return _message(doc), _message(reply), False

    @_observed
    async def find_exchange(
        self, org: str, user: str, client_message_id: str
    ) -> tuple[str, str] | None:
        """(conversation id, reply id) of the user's message sent with
        `client_message_id`, if there is one."""
        doc = await self._collection("messages").find_one(
            {"org": org, "user": user, "client_message_id": client_message_id},
            {"conversation_id": 1, "reply_id": 1},
        )
        return (doc["conversation_id"], doc["reply_id"]) if doc else None

    @_observed
    async def interrupt_stale_replies(self, *, started_before: str) -> int:
        result = await self._collection("messages").update_many(
            {"role": "assistant", "status": "streaming", "created_at": {"$lt": started_before}},
            {"$set": {"status": "interrupted"}},
        )
        return result.modified_count

    @_observed
    async def save_reply(
        self,
        message_id: str,
        *,
        text: str,
        tool_calls: list[dict[str, Any]],
        status: str,
        usage: dict[str, Any] | None = None,
    ) -> None:
        await self._collection("messages").update_one(
            {"_id": message_id},
            {"$set": {"text": text, "tool_calls": tool_calls, "status": status, "usage": usage}},
        )

    @_observed
    async def get_message(self, org: str, message_id: str) -> Message | None:
        doc = await self._collection("messages").find_one({"_id": message_id, "org": org})
        return _message(doc) if doc else None

    @_observed
    async def list_messages(
        self, org: str, conversation_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Message], str | None]:
        """Messages oldest first."""
        query: Doc = {"org": org, "conversation_id": conversation_id}
        if cursor is not None:
            value, last_id = decode_cursor(cursor, "messages")
            query["$and"] = [
                {"created_at": {"$gte": value}},
                {"$or": [{"created_at": {"$gt": value}}, {"_id": {"$gt": last_id}}]},
            ]
        docs = (
            await self._collection("messages")
            .find(query)
            .sort([("created_at", 1), ("_id", 1)])
            .limit(limit + 1)
            .to_list(None)
        )
        items = [_message(doc) for doc in docs[:limit]]
        next_cursor = None
        if len(docs) > limit:
            next_cursor = encode_cursor("messages", items[-1].created_at, items[-1].id)
        return items, next_cursor

    @_observed
    async def recent_messages(self, org: str, conversation_id: str, limit: int) -> list[Message]:
        """The last `limit` messages of a conversation, oldest first (history for the model)."""
        if limit <= 0:
            return []
        docs = (
            await self._collection("messages")
            .find({"org": org, "conversation_id": conversation_id})
            .sort([("created_at", -1), ("_id", -1)])
            .limit(limit)
            .to_list(None)
        )
        return [_message(doc) for doc in reversed(docs)]

    # -- search result sets --------------------------------------------------

    @_observed
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
        rows = search_rows(people)
        searches = self._collection("searches")
        stored = (
            await searches.find(
                {"org": org, "expires_at": {"$gte": _utc(time.time())}}, {"row_count": 1}
            )
            .sort([("created_at", 1), ("_id", 1)])
            .to_list(None)
        )
        dropped = oldest_over_quota(
            ((doc["_id"], doc.get("row_count", 0)) for doc in stored), rows, self.search_rows_quota
        )
        if dropped:
            await searches.delete_many({"_id": {"$in": dropped}})
        await searches.insert_one(
            {
                "_id": search.id,
                "org": org,
                "user": user,
                "conversation_id": conversation_id,
                "query": query,
                "people": [p.to_wire() for p in people],
                "created_at": search.created_at,
                "expires_at": _utc(time.time() + self.search_ttl_s),
                "row_count": rows,
            }
        )
        return search

    @_observed
    async def get_search(self, org: str, search_id: str) -> SearchSet | None:
        doc = await self._collection("searches").find_one(
            {"_id": search_id, "org": org, "expires_at": {"$gte": _utc(time.time())}}
        )
        if doc is None:
            return None
        return SearchSet(
            doc["_id"],
            doc["org"],
            doc["user"],
            doc["conversation_id"],
            doc["query"],
            [Person.from_wire(p) for p in doc["people"]],
            doc["created_at"],
        )

    # -- jobs ------------------------------------------------------------------

    @_observed
    async def create_job(self, org: str, user: str, kind: str, params: dict[str, Any]) -> Job:
        now = iso_now()
        job = Job(new_id("jb"), org, user, kind, "queued", params, 0, 0, None, None, now, now)  # type: ignore[arg-type]
        await self._collection("jobs").insert_one(
            {
                "_id": job.id,
                "org": org,
                "user": user,
                "kind": kind,
                "status": job.status,
                "params": params,
                "done": 0,
                "total": 0,
                "result": None,
                "error": None,
                "created_at": now,
                "updated_at": now,
            }
        )
        return job

    @_observed
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
        fields = {"status": status, "done": done, "total": total, "result": result, "error": error}
        changed: Doc = {key: value for key, value in fields.items() if value is not None}
        changed["updated_at"] = iso_now()
        await self._collection("jobs").update_one({"_id": job_id}, {"$set": changed})

    @_observed
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
        # Insert, then count the user's active jobs, this one included; over the
        # limit, remove it. The last of racing calls to count sees every job
        # kept, so no more than `limit` are kept (racers may all give up: fine).
        job = await self.create_job(org, user, kind, params)
        jobs = self._collection("jobs").with_options(read_preference=Primary())
        active = await jobs.count_documents(
            {
                "org": org,
                "user": user,
                "status": {"$in": ["queued", "running"]},
                "updated_at": {"$gte": active_since},
            }
        )
        if active <= limit:
            return job
        await jobs.delete_one({"_id": job.id})
        return None

    @_observed
    async def get_job(self, org: str, job_id: str) -> Job | None:
        doc = await self._collection("jobs").find_one({"_id": job_id, "org": org})
        if doc is None:
            return None
        return Job(
            doc["_id"],
            doc["org"],
            doc["user"],
            doc["kind"],
            doc["status"],
            doc["params"],
            doc["done"],
            doc["total"],
            doc["result"],
            doc["error"],
            doc["created_at"],
            doc["updated_at"],
        )

    # -- usage -------------------------------------------------------------------

    @_observed
    async def add_usage(self, org: str, day: str, *, tokens: int, cost_usd: float | None) -> None:
        await self._collection("usage").update_one(
            {"_id": f"{org}|{day}"},
            {
                "$inc": {"tokens": tokens, "cost_usd": cost_usd or 0.0, "rev": 1},
                "$setOnInsert": {"org": org, "day": day},
            },
            upsert=True,
        )

    @_observed
    async def usage_on(self, org: str, day: str) -> tuple[int, float]:
        doc = await self._collection("usage").find_one({"_id": f"{org}|{day}"})
        return (doc.get("tokens", 0), doc.get("cost_usd", 0.0)) if doc else (0, 0.0)

    @_observed
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
        def grant(doc: Doc) -> tuple[dict[str, Any], tuple[int, float] | None]:
            row = (
                doc.get("tokens", 0),
                doc.get("cost_usd", 0.0),
                doc.get("reserved_tokens", 0),
                doc.get("reserved_cost_usd", 0.0),
            )
            granted = usage_grant(row, tokens, cost_usd, max_tokens, max_usd)
            if granted is None:
                return {}, None
            return {"reserved_tokens": granted[0], "reserved_cost_usd": granted[1]}, granted

        return await self._update_usage(org, day, grant)

    @_observed
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
        increments = {
            "tokens": prompt_tokens + completion_tokens,
            "cost_usd": cost_usd or 0.0,
            "replies": replies,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "reserved_tokens": -reserved_tokens,
            "reserved_cost_usd": -reserved_cost_usd,
            "rev": 1,
        }
        await self._collection("usage").update_one(
            {"_id": f"{org}|{day}"},
            {"$inc": increments, "$setOnInsert": {"org": org, "day": day}},
            upsert=True,
        )

    @_observed
    async def reserve_credits(
        self, org: str, day: str, *, credits: int, max_credits: int | None
    ) -> int:
        def grant(doc: Doc) -> tuple[dict[str, Any], int]:
            row = (doc.get("credits", 0), doc.get("reserved_credits", 0))
            granted = credits_grant(row, credits, max_credits)
            return ({"reserved_credits": granted} if granted else {}), granted

        return await self._update_usage(org, day, grant)

    @_observed
    async def settle_credits(self, org: str, day: str, *, reserved: int, used: int) -> None:
        await self._collection("usage").update_one(
            {"_id": f"{org}|{day}"},
            {
                "$inc": {"credits": used, "reserved_credits": -reserved, "rev": 1},
                "$setOnInsert": {"org": org, "day": day},
            },
            upsert=True,
        )

    @_observed
    async def usage_between(self, org: str, first_day: str, last_day: str) -> list[DayUsage]:
        # The `_id` range ("org|day") walks the primary key; `org` rules out
        # another org whose name starts with this one's and a "|".
        cursor = self._collection("usage").find(
            {"_id": {"$gte": f"{org}|{first_day}", "$lte": f"{org}|{last_day}"}, "org": org},
            sort=[("_id", 1)],
        )
        return [
            DayUsage(
                doc["day"],
                replies=doc.get("replies", 0),
                prompt_tokens=doc.get("prompt_tokens", 0),
                completion_tokens=doc.get("completion_tokens", 0),
                cost_usd=doc.get("cost_usd", 0.0),
                credits=doc.get("credits", 0),
            )
            async for doc in cursor
        ]

    async def _update_usage(
        self, org: str, day: str, grant: Callable[[Doc], tuple[dict[str, Any], T]]
    ) -> T:
        """Apply `grant` (the row -> its increments and the answer) to the
        org's usage row atomically without a transaction: the increments are
        written only if the row's `rev` is still the one read, else it is
        read again. Every write to the row bumps `rev`."""
        usage = self._collection("usage")
        key = f"{org}|{day}"
        for _ in range(USAGE_UPDATE_TRIES):
            doc = await usage.find_one({"_id": key})
            increments, answer = grant(doc or {})
            if not increments:
                return answer
            if doc is None:
                try:
                    await usage.insert_one(
                        {"_id": key, "org": org, "day": day, "rev": 1, **increments}
                    )
                except DuplicateKeyError:
                    continue  # made meanwhile: read it
                return answer
            written = await usage.update_one(
                {"_id": key, "rev": doc.get("rev")}, {"$inc": {**increments, "rev": 1}}
            )
            if written.matched_count:
                return answer
        raise StoreError(f"the usage of {org} kept changing; try again")


# -- planning lead writes --------------------------------------------------------


class _LeadBatch:
    """The lead changes of one atomic write, planned in memory: what each
    lead was before, each change in order, and the rows to write. Versions
    and timestamps are given by `stamped()` once the versions are reserved."""

    def __init__(self, org: str) -> None:
        self.org = org
        self.before: dict[str, Lead | None] = {}  # lead id -> stored row (None: new)
        self.steps: list[tuple[ChangeOp, str, Lead | None]] = []
        self._stamped: dict[str, Lead | None] = {}

    def insert(self, item: LeadInput) -> Lead:
        lead = new_lead(self.org, new_id("ld"), item, "")  # stamped with the write's time
        self.before.setdefault(lead.id, None)
        self.steps.append(("insert", lead.id, lead))
        return lead

    def update(self, existing: Lead, changed: Lead) -> Lead:
        """Plan `changed` if it differs from `existing`; return what will be stored."""
        if changed == existing:
            return existing
        self.before.setdefault(existing.id, existing)
        lead = replace(changed, updated_at="")
        self.steps.append(("update", lead.id, lead))
        return lead

    def delete(self, existing: Lead) -> None:
        self.before.setdefault(existing.id, existing)
        self.steps.append(("delete", existing.id, None))

    def stamped(
        self, first_version: int, at: str
    ) -> tuple[list[Change], list[InsertOne[Doc] | ReplaceOne[Doc] | DeleteOne]]:
        """The changes with their versions and time, and the row writes (one
        per lead: its state after the last change)."""
        changes = []
        for offset, (op, lead_id, lead) in enumerate(self.steps):
            if lead is not None:
                created = at if self.before[lead_id] is None else lead.created_at
                lead = replace(lead, created_at=created, updated_at=at)
            self._stamped[lead_id] = lead
            changes.append(Change(self.org, first_version + offset, op, lead_id, lead, at))
        rows: list[InsertOne[Doc] | ReplaceOne[Doc] | DeleteOne] = []
        for lead_id, before in self.before.items():
            after = self._stamped[lead_id]
            if after is None:
                if before is not None:
                    rows.append(DeleteOne({"_id": lead_id, "org": self.org}))
            elif before is None:
                rows.append(InsertOne(_lead_doc(after)))
            else:
                rows.append(ReplaceOne({"_id": lead_id, "org": self.org}, _lead_doc(after)))
        return changes, rows

    def final(self, lead: Lead) -> Lead | None:
        """`lead` (as planned) as stored after the write (after `stamped()`)."""
        return self._stamped.get(lead.id, lead)

    def stats_delta(self) -> dict[str, int]:
        delta = {"total": 0, "with_email": 0, "with_phone": 0, "with_both": 0}
        for lead_id, before in self.before.items():
            for lead, sign in ((before, -1), (self._stamped.get(lead_id), +1)):
                if lead is None:
                    continue
                delta["total"] += sign
                delta["with_email"] += sign * bool(lead.emails)
                delta["with_phone"] += sign * bool(lead.phones)
                delta["with_both"] += sign * bool(lead.emails and lead.phones)
        return delta


# -- documents -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Keys:
    """Derived fields a lead document carries for its indexes and search."""

    name_key: str
    company_key: str
    contact: int
    search_text: str

    @classmethod
    def of(cls, lead: Lead) -> _Keys:
        contact = (EMAIL if lead.emails else 0) | (PHONE if lead.phones else 0)
        return cls(lead.name.casefold(), lead.company.casefold(), contact, lead_search_text(lead))


def _lead_doc(lead: Lead) -> Doc:
    keys = _Keys.of(lead)
    return {
        "_id": lead.id,
        "org": lead.org,
        "source": lead.source,
        "person_id": lead.person_id,
        "name": lead.name,
        "name_key": keys.name_key,
        "title": lead.title,
        "company": lead.company,
        "company_key": keys.company_key,
        "industry": lead.industry,
        "location": lead.location,
        "emails": list(lead.emails),
        "phones": list(lead.phones),
        "linkedin": lead.linkedin,
        "tags": list(lead.tags),
        "notes": lead.notes,
        "sources": list(lead.sources),
        "identity_keys": list(lead_keys(lead)),
        "contact": keys.contact,
        "search_text": keys.search_text,
        "created_at": lead.created_at,
        "updated_at": lead.updated_at,
    }


def _lead(doc: Doc) -> Lead:
    return Lead(
        id=doc["_id"],
        org=doc["org"],
        person_id=doc["person_id"],
        source=doc["source"],
        name=doc["name"],
        title=doc["title"],
        company=doc["company"],
        industry=doc.get("industry"),
        location=doc.get("location"),
        emails=tuple(doc["emails"]),
        phones=tuple(doc["phones"]),
        linkedin=doc.get("linkedin"),
        tags=tuple(doc["tags"]),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        notes=doc.get("notes"),
        sources=tuple(doc.get("sources") or (doc["source"],)),
    )


def _change_doc(change: Change, at_epoch: float) -> Doc:
    return {
        "org": change.org,
        "version": change.version,
        "op": change.op,
        "lead_id": change.lead_id,
        "lead": change.lead.to_wire() if change.lead else None,
        "at": change.at,
        "at_epoch": at_epoch,
    }


def _change(doc: Doc) -> Change:
    org, wire = doc["org"], doc["lead"]
    lead = Lead.from_wire(org, wire) if wire is not None else None
    return Change(org, doc["version"], doc["op"], doc["lead_id"], lead, doc["at"])


def _person_doc(p: Person) -> Doc:
    return {
        "_id": p.person_id,
        "name": p.name,
        "name_key": p.name.casefold(),
        "title": p.title,
        "title_key": title_key(p.title),
        "seniority": p.seniority,
        "department": p.department,
        "company": p.company,
        "company_key": p.company.casefold(),
        "industry": p.industry,
        "location": p.location,
        "emails": list(p.emails),
        "phones": list(p.phones),
        "linkedin": p.linkedin,
        "has_email": bool(p.emails),
        "has_phone": bool(p.phones),
    }


def _person(doc: Doc) -> Person:
    return Person(
        person_id=doc["_id"],
        source="directory",
        name=doc["name"],
        title=doc["title"],
        company=doc["company"],
        industry=doc.get("industry"),
        location=doc.get("location"),
        emails=tuple(doc["emails"]),
        phones=tuple(doc["phones"]),
        linkedin=doc.get("linkedin"),
        seniority=doc.get("seniority"),
        department=doc.get("department"),
    )


def _conversation(doc: Doc) -> Conversation:
    return Conversation(
        doc["_id"], doc["org"], doc["user"], doc["title"], doc["created_at"], doc["updated_at"]
    )


def _message_doc(m: Message) -> Doc:
    doc: Doc = {
        "_id": m.id,
        "conversation_id": m.conversation_id,
        "org": m.org,
        "user": m.user,
        "role": m.role,
        "text": m.text,
        "tool_calls": m.tool_calls,
        "status": m.status,
        "reply_id": m.reply_id,
        "usage": m.usage,
        "created_at": m.created_at,
    }
    if m.client_message_id is not None:  # absent, not null: the unique index is partial
        doc["client_message_id"] = m.client_message_id
    return doc


def _message(doc: Doc) -> Message:
    return Message(
        id=doc["_id"],
        conversation_id=doc["conversation_id"],
        org=doc["org"],
        user=doc["user"],
        role=doc["role"],
        text=doc["text"],
        tool_calls=doc["tool_calls"],
        status=doc["status"],
        client_message_id=doc.get("client_message_id"),
        reply_id=doc.get("reply_id"),
        usage=doc.get("usage"),
        created_at=doc["created_at"],
    )


def _is_duplicate(error: DuplicateKeyError | BulkWriteError) -> bool:
    if isinstance(error, DuplicateKeyError):
        return True
    return any(e.get("code") == DUPLICATE_KEY for e in error.details.get("writeErrors", []))


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# -- queries ---------------------------------------------------------------------


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


def _people_query(q: PeopleQuery) -> Doc:
    clauses: list[Doc] = []
    for word in q.title_terms:  # a word prefix: title_key is " word word "
        clauses.append({"title_key": {"$regex": " " + re.escape(word)}})
    if q.industry:
        clauses.append({"industry": q.industry})
    if q.company:
        clauses.append({"company_key": {"$regex": "^" + re.escape(q.company.casefold())}})
    if q.location:
        clauses.append({"location": {"$regex": re.escape(q.location), "$options": "i"}})
    if q.seniority:
        clauses.append({"seniority": q.seniority})
    for word in q.keywords:
        pattern = {"$regex": re.escape(word), "$options": "i"}
        clauses.append({"$or": [{"title": pattern}, {"company": pattern}]})
    if q.has_phone:
        clauses.append({"has_phone": True})
    if q.has_email:
        clauses.append({"has_email": True})
    return {"$and": clauses} if clauses else {}
