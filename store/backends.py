"""Choosing the store backend from `LEADSTREAM_STORE`, and opening it timed."""

from __future__ import annotations

from typing import Any

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
    # What every backend takes, by the same names.
    options: dict[str, Any] = {
        "changes_retention_s": changes_retention_s,
        "search_ttl_s": search_ttl_s,
        "query_bounds": query_bounds,
        "search_rows_quota": search_rows_quota,
    }
    backend: Store
    if url.startswith("sqlite:///"):
        backend = SqliteStore(sqlite_path(url), **options)
    elif url.startswith(("mongodb://", "mongodb+srv://")):
        from leadstream.store.mongodb import MongoStore  # pymongo only when asked for

        backend = MongoStore(url, **options)
    else:
        raise StoreError(f"unsupported store URL {url!r}")
    return TimedStore(backend, on_call)
