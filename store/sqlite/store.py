"""`SqliteStore`: the parts composed over one `SqliteDatabase`."""

from __future__ import annotations

from pathlib import Path

from leadstream.store.errors import StoreError
from leadstream.store.lead_search import QueryBounds
from leadstream.store.listeners import ChangeListeners
from leadstream.store.sqlite.conversations import SqliteConversations
from leadstream.store.sqlite.database import SqliteDatabase
from leadstream.store.sqlite.directory import SqliteDirectory
from leadstream.store.sqlite.jobs import SqliteJobs
from leadstream.store.sqlite.leads import SqliteLeads
from leadstream.store.sqlite.usage import SqliteUsage


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative/path` or `sqlite:////absolute/path` -> a Path."""
    if not url.startswith("sqlite:///"):
        raise StoreError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite:///") :]
    if not rest:
        raise StoreError("the sqlite URL names no file")
    return Path(rest)


class SqliteStore(SqliteLeads, SqliteDirectory, SqliteConversations, SqliteJobs, SqliteUsage):
    """The store on one SQLite file (see the package docstring).

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
        self.listeners = ChangeListeners()
        self.database = SqliteDatabase(
            path, readers=readers, searchers=searchers, listeners=self.listeners
        )

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    async def ping(self) -> None:
        await self.database.read(lambda db: db.execute("SELECT 1").fetchone())
