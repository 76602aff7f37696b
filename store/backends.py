"""Choosing the store backend from `LEADSTREAM_STORE`."""

from __future__ import annotations

from leadstream.store.base import Store
from leadstream.store.errors import StoreError
from leadstream.store.sqlite import SqliteStore, sqlite_path


def open_store(url: str, *, changes_retention_s: int, search_ttl_s: int) -> Store:
    """A (not yet opened) store for `url`: `sqlite:///...` or `mongodb://...`."""
    if url.startswith("sqlite:///"):
        return SqliteStore(
            sqlite_path(url), changes_retention_s=changes_retention_s, search_ttl_s=search_ttl_s
        )
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from leadstream.store.mongodb import MongoStore  # pymongo only when asked for

        return MongoStore(url, changes_retention_s=changes_retention_s, search_ttl_s=search_ttl_s)
    raise StoreError(f"unsupported store URL {url!r}")
