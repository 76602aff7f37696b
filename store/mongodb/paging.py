"""Keyset pages (`store.paging.KeysetPage`) read from MongoDB: the query
that starts after the previous page, the sort, and the cut."""

from __future__ import annotations

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.cursor import AsyncCursor

from leadstream.store.mongodb.connection import Session
from leadstream.store.mongodb.documents import Doc
from leadstream.store.paging import KeysetPage


def find_page(
    collection: AsyncCollection[Doc], query: Doc, page: KeysetPage, *, session: Session = None
) -> AsyncCursor[Doc]:
    """The documents of `query` on `page`: sorted by the page's field, ties
    by `_id`, from after the previous page's last row, `page.rows_to_read`
    of them at most. Chain `hint` or `max_time_ms` on it as needed."""
    if page.after is not None:
        value, last_id = page.after
        after = "$lt" if page.descending else "$gt"
        # The range on the sort field bounds the index scan; the $or breaks ties by id.
        query = {
            **query,
            "$and": [
                *query.get("$and", []),
                {page.field: {"$lte" if page.descending else "$gte": value}},
                {"$or": [{page.field: {after: value}}, {"_id": {after: last_id}}]},
            ],
        }
    direction = -1 if page.descending else 1
    return (
        collection.find(query, session=session)
        .sort([(page.field, direction), ("_id", direction)])
        .limit(page.rows_to_read)
    )


def split_page(page: KeysetPage, docs: list[Doc]) -> tuple[list[Doc], str | None]:
    """The page's documents and the next page's cursor (None: the last page)."""
    return page.split(docs, key=lambda doc: (doc[page.field], doc["_id"]))
