"""The embedded store: one SQLite file in WAL mode.

`SqliteStore` is composed of one mixin per part of the `Store` protocol,
each a small module that holds only that part's SQL: `leads` (leads and the
change log, with `lead_rows` writing a planned `store.lead_batch.LeadBatch`
in one transaction), `directory` (people), `conversations` (conversations,
messages, search result sets), `jobs` and `usage`. Mixins, not separate
objects, because they share everything but their SQL: each declares what it
uses of the store (`database`, a setting or two) and reads it from `self`,
and the store needs no method that only forwards. The shared pieces are
`database` (the file, its writer thread and reader pools: see its
docstring), `rows` (records to rows and back) and `schema` (tables,
indexes, and what older databases need added). What does not depend on
SQLite (merging leads, paging, building messages, jobs) is the store core's,
beside `store.base`; timing calls is `store.timing`'s.

Every lead change takes the org's next version in the same transaction as
the change itself; after the commit, the change listeners are called on the
event loop in commit order (so the live feed emits after commit, in order).
"""

from leadstream.store.sqlite.store import SqliteStore, sqlite_path

__all__ = ["SqliteStore", "sqlite_path"]
