"""What every part of `MongoStore` shares: the client, the database,
sessions and transactions.

Configuration comes from the URL (`mongodb://` or `mongodb+srv://`), with
PyMongo's own option names: pool (`maxPoolSize`, `minPoolSize`,
`maxIdleTimeMS`, `waitQueueTimeoutMS`), timeouts (`connectTimeoutMS`,
`serverSelectionTimeoutMS`, `socketTimeoutMS`, `timeoutMS`), `retryWrites`
and `retryReads` (both on unless the URL says `false`), `compressors`
(`zlib` is built in; `zstd` and `snappy` need their PyPI packages), `w`,
`readPreference`, TLS and authentication. The database is the URL's path
(`mongodb://host/leadstream`), `leadstream` when it names none. The keyword
arguments of `MongoStore` set the same options from code and win over the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_preferences import Primary, _ServerMode

from leadstream.store.errors import StoreError
from leadstream.store.lead_search import QueryBounds
from leadstream.store.listeners import ChangeListeners
from leadstream.store.mongodb.documents import Doc
from leadstream.store.mongodb.indexes import create_schema

T = TypeVar("T")
Session = AsyncClientSession | None

DEFAULT_DATABASE = "leadstream"
ORG_LOCK_STRIPES = 64


class MongoConnection:
    """The state and plumbing every part of the store shares: options, the
    client and database, sessions, transactions, change listeners and the
    per-org write locks. Built through `MongoStore`, whose docstring lists
    the parameters. Calls are timed by `store.timing.TimedStore`, where the
    store is opened (`store.backends.open_store`), not here."""

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
        self._listeners = ChangeListeners()
        # Lead writes of one org go one at a time in this process (listeners
        # then see versions in order); striped so the locks stay bounded.
        self._org_locks = [asyncio.Lock() for _ in range(ORG_LOCK_STRIPES)]

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
        await create_schema(self.db)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._db = None

    async def ping(self) -> None:
        await self.db.command("ping")

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

    async def _atomically(self, work: Callable[[Session], Awaitable[T]]) -> T:
        """Run `work` in a transaction when the server has them (retried on
        transient errors, so `work` must only write through its session);
        else run it once without one."""
        if not self.transactions:
            return await work(None)
        async with self.client.start_session() as session:
            return await session.with_transaction(work, read_preference=Primary())
