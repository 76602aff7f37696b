"""The scale-out store: MongoDB through PyMongo's async API (`AsyncMongoClient`).

`MongoStore` is composed of one mixin per part of the `store.base.Store`
protocol, each a small module that holds only that part's queries:
`leads` (`MongoLeads`: leads, on top of `changes`' `MongoChanges`: versions
and the change log), `directory` (people), `conversations` (conversations,
messages, search result sets), `jobs` and `usage`. Every mixin is a
`connection.MongoConnection`, which holds what they share: the options, the
client and database, sessions, transactions, change listeners and write
locks. Mixins, not separate objects, because the parts share everything
but their queries, none calls another (leads read the version below them),
and the store then needs no method that only forwards. The other shared
pieces are `indexes` (collections and indexes, made at `open()`),
`documents` (records to documents and back) and `paging` (a
`store.paging.KeysetPage` as a MongoDB find). What does not depend on
MongoDB (planning lead writes, paging, building messages and jobs, change
listeners) is the store core's, beside `store.base`; timing calls is
`store.timing`'s, applied by `store.backends.open_store`.

Collections, with documents in snake_case like the SQLite columns:
`leads`, `org_state` (one per org: version counter, stats, prune mark),
`changes`, `people`, `conversations`, `messages`, `searches`, `jobs`,
`usage`. How versions stay gap-free, with and without transactions: see
`leads`.
"""

from __future__ import annotations

from leadstream.store.mongodb.conversations import MongoConversations
from leadstream.store.mongodb.directory import MongoDirectory
from leadstream.store.mongodb.jobs import MongoJobs
from leadstream.store.mongodb.leads import MongoLeads
from leadstream.store.mongodb.usage import MongoUsage

__all__ = ["MongoStore"]


class MongoStore(MongoLeads, MongoDirectory, MongoConversations, MongoJobs, MongoUsage):
    """The store on a MongoDB database. See the package docstring for its
    parts, and theirs for the configuration, the indexes and how versions
    stay gap-free.

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
