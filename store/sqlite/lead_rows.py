"""Lead writes inside one SQLite transaction: finding the stored leads a
write may go to, and writing a planned `lead_batch.LeadBatch` (rows, full-text
index, identity keys, change log, versions and stats) with a few
`executemany` statements."""

from __future__ import annotations

import sqlite3
import time

from leadstream.store.lead_batch import STATS_FIELDS, LeadBatch
from leadstream.store.lead_identity import input_keys, lead_keys
from leadstream.store.records import Change, Lead, LeadInput, iso_from_epoch
from leadstream.store.sqlite.rows import (
    LEAD_COLUMNS,
    chunks,
    identity_hash,
    json_text,
    lead_from_row,
    lead_values,
    org_version,
)


class Written:
    """A lead write's answer and the changes it committed (which the
    transaction hands to the change listeners)."""

    __slots__ = ("changes", "lead")

    def __init__(self, lead: Lead | None, changes: list[Change]) -> None:
        self.lead = lead
        self.changes = changes


class LeadRows:
    """The org's lead rows within one write transaction.

    :param db: the writer's connection, inside `BEGIN IMMEDIATE`.
    :param org: the org written to; its version is read once, here.
    """

    def __init__(self, db: sqlite3.Connection, org: str) -> None:
        self.db = db
        self.org = org
        self.now = time.time()
        self.at = iso_from_epoch(self.now)
        db.execute("INSERT OR IGNORE INTO org_state (org) VALUES (?)", (org,))
        self.version = org_version(db, org)
        self._hashes: dict[tuple[str, str], int] = {}  # (source, key) -> its hash

    def batch(self) -> LeadBatch:
        """A batch to plan this write in (stamped with its time as it goes)."""
        return LeadBatch(self.org, self.at)

    def by_id(self, lead_id: str) -> Lead | None:
        row = self.db.execute(
            f"SELECT {LEAD_COLUMNS} FROM leads WHERE org = ? AND id = ?", (self.org, lead_id)
        ).fetchone()
        return lead_from_row(row) if row else None

    def candidates(self, items: list[LeadInput]) -> list[Lead]:
        """The stored leads these items may go to: those of the same (source,
        person_id), and those of another source sharing an identity key with
        one (a few queries, each on an index)."""
        found: dict[str, Lead] = {}
        by_source: dict[str, set[str]] = {}
        for item in items:
            by_source.setdefault(item.source, set()).add(item.person_id)
        for source, person_ids in by_source.items():
            for part in chunks(sorted(person_ids)):
                for row in self.db.execute(
                    f"SELECT {LEAD_COLUMNS} FROM leads WHERE org = ? AND source = ? "
                    f"AND person_id IN ({','.join('?' * len(part))})",
                    (self.org, source, *part),
                ):
                    found[row[0]] = lead_from_row(row)
        # An item's keys under each other source the org has leads of.
        org_sources = {
            source
            for (source,) in self.db.execute(
                "SELECT source FROM lead_sources WHERE org = ?", (self.org,)
            )
        }
        hashes = {
            self._hash(other, key)
            for item in items
            if org_sources - {item.source}
            for key in input_keys(item)
            for other in org_sources - {item.source}
        }
        matched: set[str] = set()
        for hash_part in chunks(sorted(hashes)):
            matched.update(
                lead_id
                for (lead_id,) in self.db.execute(
                    f"SELECT lead_id FROM identity_hashes "
                    f"WHERE hash IN ({','.join('?' * len(hash_part))})",
                    hash_part,
                )
            )
        self.db.executemany(
            "INSERT OR IGNORE INTO lead_sources (org, source) VALUES (?, ?)",
            [(self.org, source) for source in by_source.keys() - org_sources],
        )
        for part in chunks(sorted(matched - found.keys())):
            for row in self.db.execute(
                f"SELECT {LEAD_COLUMNS} FROM leads WHERE org = ? "
                f"AND id IN ({','.join('?' * len(part))})",
                (self.org, *part),
            ):
                found[row[0]] = lead_from_row(row)
        return list(found.values())

    def write(self, batch: LeadBatch) -> list[Change]:
        """Write what `batch` planned, numbered from the org's next version;
        the changes, oldest first."""
        changes, rows = batch.stamped(self.version + 1, self.at)
        if not changes:
            return []
        # (stored, after): deleted leads have no after, new ones nothing stored.
        deleted = [row.before for row in rows if row.before is not None and row.after is None]
        inserted = [row.after for row in rows if row.before is None and row.after is not None]
        updated = [
            (row.before, row.after)
            for row in rows
            if row.before is not None and row.after is not None
        ]
        if deleted:
            self.db.executemany("DELETE FROM leads WHERE id = ?", [(lead.id,) for lead in deleted])
            for lead in deleted:
                self._rekey(lead, ())
        if inserted:
            self._insert(inserted)
        if updated:
            self.db.executemany(
                "UPDATE leads SET name = ?, name_key = ?, title = ?, company = ?, "
                "company_key = ?, industry = ?, location = ?, emails = ?, phones = ?, "
                "linkedin = ?, tags = ?, has_email = ?, has_phone = ?, search_text = ?, "
                "notes = ?, sources = ?, updated_at = ? WHERE id = ?",
                [(*lead_values(after), after.updated_at, after.id) for _, after in updated],
            )
            for stored, after in updated:
                self._rekey(stored, lead_keys(after))
        self.db.executemany(
            "INSERT INTO changes VALUES (?,?,?,?,?,?,?)",
            [
                (
                    self.org,
                    change.version,
                    change.op,
                    change.lead_id,
                    json_text(change.lead.to_wire()) if change.lead else None,
                    change.at,
                    self.now,
                )
                for change in changes
            ],
        )
        delta = batch.stats_delta()
        self.db.execute(
            "UPDATE org_state SET version = ?, total = total + ?, with_email = with_email + ?, "
            "with_phone = with_phone + ?, with_both = with_both + ? WHERE org = ?",
            (changes[-1].version, *(delta[name] for name in STATS_FIELDS), self.org),
        )
        return changes

    def _insert(self, leads: list[Lead]) -> None:
        # New rows take rowids above the current largest (no AUTOINCREMENT,
        # one writer): they are exactly the rows past `last` afterwards.
        (last,) = self.db.execute("SELECT coalesce(max(rowid), 0) FROM leads").fetchone()
        self.db.executemany(
            "INSERT INTO leads (id, org, source, person_id, name, name_key, title, company, "
            "company_key, industry, location, emails, phones, linkedin, tags, has_email, "
            "has_phone, search_text, notes, sources, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    lead.id,
                    self.org,
                    lead.source,
                    lead.person_id,
                    *lead_values(lead),
                    lead.created_at,
                    lead.updated_at,
                )
                for lead in leads
            ],
        )
        self.db.execute(
            "INSERT INTO leads_fts (rowid, search_text) "
            "SELECT rowid, search_text FROM leads WHERE rowid > ?",
            (last,),
        )
        # In hash order: each B-tree page is visited once per batch.
        self.db.executemany(
            "INSERT OR IGNORE INTO identity_hashes (hash, lead_id) VALUES (?, ?)",
            sorted(
                (self._hash(lead.source, key), lead.id) for lead in leads for key in lead_keys(lead)
            ),
        )

    def _hash(self, source: str, key: str) -> int:
        hashed = self._hashes.get((source, key))
        if hashed is None:
            hashed = self._hashes[(source, key)] = identity_hash(self.org, source, key)
        return hashed

    def _rekey(self, stored: Lead, after: tuple[str, ...]) -> None:
        """Make the lead's rows of `identity_hashes` go from its stored keys
        to `after` (a key the lead gives up is no longer found for its source,
        even if another lead of the source has it: a rare miss, never a
        wrong merge)."""
        before = lead_keys(stored)
        gone, new = set(before) - set(after), set(after) - set(before)
        if gone:
            self.db.executemany(
                "DELETE FROM identity_hashes WHERE hash = ? AND lead_id = ?",
                [(self._hash(stored.source, key), stored.id) for key in gone],
            )
        if new:
            self.db.executemany(
                "INSERT OR IGNORE INTO identity_hashes (hash, lead_id) VALUES (?, ?)",
                [(self._hash(stored.source, key), stored.id) for key in new],
            )
