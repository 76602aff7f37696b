"""Choosing the store backend from `LEADSTREAM_STORE`."""

from __future__ import annotations

from leadstream.store.base import Store
from leadstream.store.errors import StoreError
from leadstream.store.lead_search import QueryBounds
from leadstream.store.sqlite import SqliteStore, sqlite_path


def open_store(
    url: str,
    *,
    changes_retention_s: int,
    search_ttl_s: int,
    query_bounds: QueryBounds | None = None,
    search_rows_quota: int = 20_000,
) -> Store:
    """A (not yet opened) store for `url`: `sqlite:///...` or `mongodb://...`."""
    if url.startswith("sqlite:///"):
        return SqliteStore(
            sqlite_path(url),
            changes_retention_s=changes_retention_s,
            search_ttl_s=search_ttl_s,
            query_bounds=query_bounds,
            search_rows_quota=search_rows_quota,
        )
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from leadstream.store.mongodb import MongoStore  # pymongo only when asked for

        return MongoStore(
            url,
            changes_retention_s=changes_retention_s,
            search_ttl_s=search_ttl_s,
            query_bounds=query_bounds,
            search_rows_quota=search_rows_quota,
        )
    raise StoreError(f"unsupported store URL {url!r}")
