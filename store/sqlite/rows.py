"""Records to rows and back: the column lists, JSON columns and the derived
columns (sort keys, contact flags, search text) of each table."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from typing import Any, TypeVar

import orjson

from leadstream.store.lead_search import lead_search_text
from leadstream.store.records import Change, Lead, Message, Person

T = TypeVar("T")

LEAD_COLUMNS = (
    "id, org, person_id, source, name, title, company, industry, location, "
    "emails, phones, linkedin, tags, created_at, updated_at, notes, sources"
)
PEOPLE_COLUMNS = (
    "person_id, name, title, company, industry, location, emails, phones, linkedin, "
    "seniority, department"
)
MESSAGE_COLUMNS = (
    "id, conversation_id, org, user_id, role, text, tool_calls, status, client_message_id, "
    "reply_id, usage, created_at"
)


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def chunks(values: list[T], size: int = 500) -> Iterator[list[T]]:
    """`values` in parts small enough for one statement's parameters."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def like(text: str, *, prefix: bool = False) -> str:
    """A LIKE pattern (ESCAPE '\\') matching `text` anywhere, or at the start."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%" if prefix else f"%{escaped}%"


def identity_hash(org: str, source: str, key: str) -> int:
    """A signed 64-bit hash of an identity key of a source's leads in an org
    (the `identity_hashes` row)."""
    digest = hashlib.blake2b(f"{org}\n{source}\n{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def org_version(db: sqlite3.Connection, org: str) -> int:
    row = db.execute("SELECT version FROM org_state WHERE org = ?", (org,)).fetchone()
    return row[0] if row else 0


def lead_from_row(row: tuple[Any, ...]) -> Lead:
    """A lead from the `LEAD_COLUMNS` of its row."""
    return Lead(
        id=row[0],
        org=row[1],
        person_id=row[2],
        source=row[3],
        name=row[4],
        title=row[5],
        company=row[6],
        industry=row[7],
        location=row[8],
        emails=tuple(orjson.loads(row[9])),
        phones=tuple(orjson.loads(row[10])),
        linkedin=row[11],
        tags=tuple(orjson.loads(row[12])),
        created_at=row[13],
        updated_at=row[14],
        notes=row[15],
        sources=tuple(orjson.loads(row[16])) if row[16] else (row[3],),
    )


def lead_values(lead: Lead) -> tuple[Any, ...]:
    """name..search_text, notes and sources columns, in the order INSERT and
    UPDATE use (`sources` NULL when it is just the lead's `source`)."""
    return (
        lead.name,
        lead.name.casefold(),
        lead.title,
        lead.company,
        lead.company.casefold(),
        lead.industry,
        lead.location,
        json_text(lead.emails),
        json_text(lead.phones),
        lead.linkedin,
        json_text(lead.tags),
        int(bool(lead.emails)),
        int(bool(lead.phones)),
        lead_search_text(lead),
        lead.notes,
        json_text(lead.sources) if lead.sources not in ((), (lead.source,)) else None,
    )


def change_from_row(org: str, row: tuple[Any, ...]) -> Change:
    version, op, lead_id, payload, at = row
    lead = Lead.from_wire(org, orjson.loads(payload)) if payload else None
    return Change(org, version, op, lead_id, lead, at)


def person_from_row(row: tuple[Any, ...]) -> Person:
    """A directory entry from the `PEOPLE_COLUMNS` of its row."""
    return Person(
        person_id=row[0],
        source="directory",
        name=row[1],
        title=row[2],
        company=row[3],
        industry=row[4],
        location=row[5],
        emails=tuple(orjson.loads(row[6])),
        phones=tuple(orjson.loads(row[7])),
        linkedin=row[8],
        seniority=row[9],
        department=row[10],
    )


def message_from_row(row: tuple[Any, ...]) -> Message:
    """A message from the `MESSAGE_COLUMNS` of its row."""
    return Message(
        id=row[0],
        conversation_id=row[1],
        org=row[2],
        user=row[3],
        role=row[4],
        text=row[5],
        tool_calls=orjson.loads(row[6]),
        status=row[7],
        client_message_id=row[8],
        reply_id=row[9],
        usage=orjson.loads(row[10]) if row[10] else None,
        created_at=row[11],
    )


def message_row(m: Message) -> tuple[Any, ...]:
    """The `MESSAGE_COLUMNS` of a message's row."""
    return (
        m.id,
        m.conversation_id,
        m.org,
        m.user,
        m.role,
        m.text,
        json_text(m.tool_calls),
        m.status,
        m.client_message_id,
        m.reply_id,
        json_text(m.usage) if m.usage else None,
        m.created_at,
    )
