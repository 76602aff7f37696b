"""Choosing the store backend from `LEADSTREAM_STORE`, and opening it timed."""

from __future__ import annotations

from leadstream.store.base import Store
from leadstream.store.errors import StoreError
from leadstream.store.lead_search import QueryBounds
from leadstream.store.sqlite import SqliteStore, sqlite_path
from leadstream.store.timing import OnCall, TimedStore


def open_store(
    url: str,
    *,
    changes_retention_s: int,
    search_ttl_s: int,
    query_bounds: QueryBounds | None = None,
    search_rows_quota: int = 20_000,
    on_call: OnCall | None = None,
) -> Store:
    """A (not yet opened) store for `url`: `sqlite:///...` or `mongodb://...`,
    each call of which reports `(operation, seconds)` to `on_call` (see
    `timing.TimedStore`; the returned store's `on_call` can also be set later)."""
    return TimedStore(
        _backend(
            url,
            changes_retention_s=changes_retention_s,
            search_ttl_s=search_ttl_s,
            query_bounds=query_bounds,
            search_rows_quota=search_rows_quota,
        ),
        on_call,
    )


def _backend(
    url: str,
    *,
    changes_retention_s: int,
    search_ttl_s: int,
    query_bounds: QueryBounds | None,
    search_rows_quota: int,
) -> Store:
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
