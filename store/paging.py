"""Keyset paging, written once for every backend and list.

A backend asks `KeysetPage` what to read (the sort field, its direction,
the key of the previous page's last row, `limit + 1` rows) and hands the
rows back to `split()`, which cuts the page and makes the next cursor.
Only the query itself (a WHERE clause, a MongoDB range) is the backend's.
`lead_pages` walks every page of a lead list (`Store.iter_leads`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from leadstream.store.base import LeadStore
from leadstream.store.cursors import SORTS, decode_cursor, encode_cursor
from leadstream.store.records import Lead, LeadFilter

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class KeysetPage:
    """One page of a keyset-paginated list.

    :param kind: what the cursor belongs to (a lead sort name, "conversations").
    :param field: the sort field; ties are broken by id in the same direction.
    :param descending: the direction of both.
    :param limit: rows on the page.
    :param after: (sort value, id) of the previous page's last row; None: first page.
    """

    kind: str
    field: str
    descending: bool
    limit: int
    after: tuple[Any, str] | None = None

    @classmethod
    def of(
        cls, kind: str, field: str, *, descending: bool, limit: int, cursor: str | None
    ) -> KeysetPage:
        """The page `cursor` points to (the first page without one);
        `InvalidCursor` for a cursor of another list."""
        after = decode_cursor(cursor, kind) if cursor is not None else None
        return cls(kind, field, descending, limit, after)

    @classmethod
    def of_leads(cls, sort: str, limit: int, cursor: str | None) -> KeysetPage:
        """A page of a lead list in one of `cursors.SORTS`; ValueError for an
        unknown sort or a limit under 1."""
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        field, descending = SORTS[sort]
        return cls.of(sort, field, descending=descending, limit=limit, cursor=cursor)

    @property
    def rows_to_read(self) -> int:
        """One row more than the page: whether it is there says if a next page is."""
        return self.limit + 1

    def split(
        self, rows: Sequence[R], key: Callable[[R], tuple[Any, str]]
    ) -> tuple[list[R], str | None]:
        """The page's rows (of up to `rows_to_read` read) and the cursor of the
        next page (None: this is the last); `key(row)` is (sort value, id)."""
        page = list(rows[: self.limit])
        if len(rows) <= self.limit or not page:
            return page, None
        value, last_id = key(page[-1])
        return page, encode_cursor(self.kind, value, last_id)


async def lead_pages(
    store: LeadStore, org: str, filter: LeadFilter | None, page_size: int
) -> AsyncIterator[list[Lead]]:
    """Every lead of `org` matching `filter`, newest first, a page at a time."""
    cursor: str | None = None
    while True:
        page = await store.list_leads(
            org, sort="createdAt:desc", limit=page_size, cursor=cursor, filter=filter
        )
        if page.leads:
            yield page.leads
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
