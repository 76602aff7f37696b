"""The SQLite schema: tables and indexes (`SCHEMA`, idempotent) and the
columns a database made by an earlier version needs added (`create`,
`add_lead_columns`)."""

from __future__ import annotations

import sqlite3

from leadstream.store.lead_identity import lead_keys
from leadstream.store.sqlite.rows import LEAD_COLUMNS, identity_hash, lead_from_row

SCHEMA = """
CREATE TABLE IF NOT EXISTS leads (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    source TEXT NOT NULL,
    person_id TEXT NOT NULL,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    title TEXT NOT NULL,
    company TEXT NOT NULL,
    company_key TEXT NOT NULL,
    industry TEXT,
    location TEXT,
    emails TEXT NOT NULL,
    phones TEXT NOT NULL,
    linkedin TEXT,
    tags TEXT NOT NULL,
    has_email INTEGER NOT NULL,
    has_phone INTEGER NOT NULL,
    search_text TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    notes TEXT,
    sources TEXT,  -- JSON list; NULL: just `source` (see LEAD_ADDED_COLUMNS)
    UNIQUE (org, source, person_id)
);
-- Every list is org equality, then the sort key, then id (ESR). The contact
-- flags ride along so a filtered page is checked inside the index: with 60%
-- of leads having a phone, a filtered page reads under 2x the rows of an
-- unfiltered one, at any depth, without more indexes to maintain on write.
CREATE INDEX IF NOT EXISTS leads_created ON leads (org, created_at, id, has_phone, has_email);
CREATE INDEX IF NOT EXISTS leads_name ON leads (org, name_key, id, has_phone, has_email);
CREATE INDEX IF NOT EXISTS leads_company ON leads (org, company_key, id, has_phone, has_email);
-- One person, one lead (`store.lead_identity`): a new lead finds the lead it
-- is merged into by an identity key (normalised email, phone, LinkedIn URL)
-- of a lead of another source of its org. `identity_hashes` maps a 64-bit
-- hash of (org, source, key) to the oldest lead of that source with that key
-- (a key thousands of one source's leads share stays one row; a hash
-- collision only makes a lead a candidate, which the matcher checks on its
-- real keys). `lead_sources` lists each org's sources, so a save probes
-- only the other sources the org has. Kept by `lead_rows.LeadRows`.
CREATE TABLE IF NOT EXISTS identity_hashes (
    hash INTEGER PRIMARY KEY,
    lead_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lead_sources (
    org TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (org, source)
) WITHOUT ROWID;
-- Word-prefix search (`q`) over name, company, title, emails and phones.
CREATE VIRTUAL TABLE IF NOT EXISTS leads_fts USING fts5(
    search_text, content='leads', content_rowid='rowid', detail='none',
    tokenize='unicode61 remove_diacritics 2'
);
-- New rows are indexed by `LeadRows.write` with one INSERT ... SELECT per
-- batch: about 5x cheaper than a trigger firing per row. (Databases made
-- before that had a trigger.)
DROP TRIGGER IF EXISTS leads_fts_insert;
CREATE TRIGGER IF NOT EXISTS leads_fts_delete AFTER DELETE ON leads BEGIN
    INSERT INTO leads_fts (leads_fts, rowid, search_text)
        VALUES ('delete', old.rowid, old.search_text);
END;
CREATE TRIGGER IF NOT EXISTS leads_fts_update AFTER UPDATE OF search_text ON leads BEGIN
    INSERT INTO leads_fts (leads_fts, rowid, search_text)
        VALUES ('delete', old.rowid, old.search_text);
    INSERT INTO leads_fts (rowid, search_text) VALUES (new.rowid, new.search_text);
END;

CREATE TABLE IF NOT EXISTS org_state (
    org TEXT PRIMARY KEY,
    version INTEGER NOT NULL DEFAULT 0,
    pruned_through INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    with_email INTEGER NOT NULL DEFAULT 0,
    with_phone INTEGER NOT NULL DEFAULT 0,
    with_both INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS changes (
    org TEXT NOT NULL,
    version INTEGER NOT NULL,
    op TEXT NOT NULL,
    lead_id TEXT NOT NULL,
    lead TEXT,
    at TEXT NOT NULL,
    at_epoch REAL NOT NULL,
    PRIMARY KEY (org, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS changes_at ON changes (at_epoch);

CREATE TABLE IF NOT EXISTS people (
    person_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    title TEXT NOT NULL,
    title_key TEXT NOT NULL,
    seniority TEXT,
    department TEXT,
    company TEXT NOT NULL,
    industry TEXT,
    location TEXT,
    emails TEXT NOT NULL,
    phones TEXT NOT NULL,
    linkedin TEXT,
    has_email INTEGER NOT NULL,
    has_phone INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS people_industry ON people (industry);
CREATE INDEX IF NOT EXISTS people_company ON people (company COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS people_name ON people (name COLLATE NOCASE);

CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    user_id TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_user ON conversations (org, user_id, updated_at, id);

CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    org TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    tool_calls TEXT NOT NULL,
    status TEXT NOT NULL,
    client_message_id TEXT,
    reply_id TEXT,
    usage TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation_id, created_at, id);
CREATE UNIQUE INDEX IF NOT EXISTS messages_client_id
    ON messages (org, user_id, client_message_id) WHERE client_message_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS searches (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    user_id TEXT NOT NULL,
    conversation_id TEXT,
    query TEXT NOT NULL,
    people TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_epoch REAL NOT NULL,
    row_count INTEGER NOT NULL DEFAULT 0  -- counts against the org's stored-rows quota
);
CREATE INDEX IF NOT EXISTS searches_org ON searches (org, created_at);
CREATE INDEX IF NOT EXISTS searches_expires ON searches (expires_epoch);

CREATE TABLE IF NOT EXISTS usage (
    org TEXT NOT NULL,
    day TEXT NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (org, day)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    done INTEGER NOT NULL,
    total INTEGER NOT NULL,
    result TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_user_status ON jobs (org, user_id, status, updated_at);
"""


def create(db: sqlite3.Connection) -> None:
    """Create what is missing and add what older databases lack. Runs on the
    writer's connection (`executescript` manages its own transaction; the
    lead columns are added in a write transaction of their own)."""
    db.executescript(SCHEMA)
    add_columns(db, "searches", SEARCH_ADDED_COLUMNS)
    add_columns(db, "usage", USAGE_ADDED_COLUMNS)


def add_columns(db: sqlite3.Connection, table: str, columns: dict[str, str]) -> bool:
    """Add the `columns` (name -> declaration) that `table` lacks; whether it lacked any."""
    present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    missing = {name: declaration for name, declaration in columns.items() if name not in present}
    for name, declaration in missing.items():
        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
    return bool(missing)


# Columns of `searches` added after it was first made: the stored-rows quota
# (searches made before it count 0 rows until they expire).
SEARCH_ADDED_COLUMNS = {"row_count": "INTEGER NOT NULL DEFAULT 0"}

# Columns of `usage` added after it was first made: reservations of running
# replies and searches, and lookup credits (all per org per UTC day).
USAGE_ADDED_COLUMNS = {
    "reserved_tokens": "INTEGER NOT NULL DEFAULT 0",
    "reserved_cost_usd": "REAL NOT NULL DEFAULT 0",
    "credits": "INTEGER NOT NULL DEFAULT 0",
    "reserved_credits": "INTEGER NOT NULL DEFAULT 0",
    # what the usage view shows (`tokens` is their sum, which budgets count)
    "replies": "INTEGER NOT NULL DEFAULT 0",
    "prompt_tokens": "INTEGER NOT NULL DEFAULT 0",
    "completion_tokens": "INTEGER NOT NULL DEFAULT 0",
}

# Columns of `leads` added after it was first made (one person, one lead).
LEAD_ADDED_COLUMNS = {"notes": "TEXT", "sources": "TEXT"}


def add_lead_columns(db: sqlite3.Connection) -> None:
    """Give `leads` of an older database `notes` and `sources`, and fill
    `identity_hashes` and `lead_sources` from its leads (so they are found by
    contact from now on).
    Runs in a write transaction: another process opening the same file at
    once finds the work done."""
    if not add_columns(db, "leads", LEAD_ADDED_COLUMNS):
        return
    db.execute("INSERT OR IGNORE INTO lead_sources SELECT DISTINCT org, source FROM leads")
    rows = db.execute(f"SELECT {LEAD_COLUMNS} FROM leads")
    while chunk := rows.fetchmany(1000):
        db.executemany(
            "INSERT OR IGNORE INTO identity_hashes (hash, lead_id) VALUES (?, ?)",
            [
                (identity_hash(lead.org, lead.source, key), lead.id)
                for lead in map(lead_from_row, chunk)
                for key in lead_keys(lead)
            ],
        )
