"""How records are stored as MongoDB documents and read back.

Fields are snake_case like the SQLite columns. Conversations, jobs and
messages are kept field by field (`record_doc`); a lead document also
carries derived fields for its indexes and search (`LeadKeys`,
`identity_keys`).
Also here: expiry dates as BSON dates (`utc`) and telling a duplicate-key
write error (`is_duplicate`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo.errors import BulkWriteError, DuplicateKeyError

from leadstream.store.lead_identity import lead_keys
from leadstream.store.lead_search import lead_search_text
from leadstream.store.records import Change, Conversation, Job, Lead, Message, Person, SearchSet
from leadstream.store.titles import title_key

Doc = dict[str, Any]
DUPLICATE_KEY = 11000  # MongoDB's error code for a unique index violation
EMAIL, PHONE = 1, 2  # bits of a lead's `contact` mask


@dataclass(frozen=True, slots=True)
class LeadKeys:
    """Derived fields a lead document carries for its indexes and search."""

    name_key: str
    company_key: str
    contact: int
    search_text: str

    @classmethod
    def of(cls, lead: Lead) -> LeadKeys:
        contact = (EMAIL if lead.emails else 0) | (PHONE if lead.phones else 0)
        return cls(lead.name.casefold(), lead.company.casefold(), contact, lead_search_text(lead))


def lead_doc(lead: Lead) -> Doc:
    keys = LeadKeys.of(lead)
    return {
        "_id": lead.id,
        "org": lead.org,
        "source": lead.source,
        "person_id": lead.person_id,
        "name": lead.name,
        "name_key": keys.name_key,
        "title": lead.title,
        "company": lead.company,
        "company_key": keys.company_key,
        "industry": lead.industry,
        "location": lead.location,
        "emails": list(lead.emails),
        "phones": list(lead.phones),
        "linkedin": lead.linkedin,
        "tags": list(lead.tags),
        "notes": lead.notes,
        "sources": list(lead.sources),
        "identity_keys": list(lead_keys(lead)),
        "contact": keys.contact,
        "search_text": keys.search_text,
        "created_at": lead.created_at,
        "updated_at": lead.updated_at,
    }


def lead_from_doc(doc: Doc) -> Lead:
    return Lead(
        id=doc["_id"],
        org=doc["org"],
        person_id=doc["person_id"],
        source=doc["source"],
        name=doc["name"],
        title=doc["title"],
        company=doc["company"],
        industry=doc.get("industry"),
        location=doc.get("location"),
        emails=tuple(doc["emails"]),
        phones=tuple(doc["phones"]),
        linkedin=doc.get("linkedin"),
        tags=tuple(doc["tags"]),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        notes=doc.get("notes"),
        sources=tuple(doc.get("sources") or (doc["source"],)),
    )


def change_doc(change: Change, at_epoch: float) -> Doc:
    return {
        "org": change.org,
        "version": change.version,
        "op": change.op,
        "lead_id": change.lead_id,
        "lead": change.lead.to_wire() if change.lead else None,
        "at": change.at,
        "at_epoch": at_epoch,
    }


def change_from_doc(doc: Doc) -> Change:
    org, wire = doc["org"], doc["lead"]
    lead = Lead.from_wire(org, wire) if wire is not None else None
    return Change(org, doc["version"], doc["op"], doc["lead_id"], lead, doc["at"])


def person_doc(p: Person) -> Doc:
    return {
        "_id": p.person_id,
        "name": p.name,
        "name_key": p.name.casefold(),
        "title": p.title,
        "title_key": title_key(p.title),
        "seniority": p.seniority,
        "department": p.department,
        "company": p.company,
        "company_key": p.company.casefold(),
        "industry": p.industry,
        "location": p.location,
        "emails": list(p.emails),
        "phones": list(p.phones),
        "linkedin": p.linkedin,
        "has_email": bool(p.emails),
        "has_phone": bool(p.phones),
    }


def person_from_doc(doc: Doc) -> Person:
    return Person(
        person_id=doc["_id"],
        source="directory",
        name=doc["name"],
        title=doc["title"],
        company=doc["company"],
        industry=doc.get("industry"),
        location=doc.get("location"),
        emails=tuple(doc["emails"]),
        phones=tuple(doc["phones"]),
        linkedin=doc.get("linkedin"),
        seniority=doc.get("seniority"),
        department=doc.get("department"),
    )


# Records kept field by field: a field's document key is its name, `id` is `_id`.
KeptRecord = TypeVar("KeptRecord", Conversation, Job, Message)
_FIELDS = {
    kind: tuple(f.name for f in fields(kind) if f.name != "id")
    for kind in (Conversation, Job, Message)
}


def record_doc(record: Conversation | Job | Message) -> Doc:
    """The document of a record kept field by field."""
    doc: Doc = {"_id": record.id}
    for name in _FIELDS[type(record)]:
        doc[name] = getattr(record, name)
    return doc


def record_from_doc(kind: type[KeptRecord], doc: Doc) -> KeptRecord:
    """The record of a `record_doc` document (a field it lacks takes its default)."""
    return kind(id=doc["_id"], **{name: doc[name] for name in _FIELDS[kind] if name in doc})


def message_doc(m: Message) -> Doc:
    doc = record_doc(m)
    if m.client_message_id is None:  # absent, not null: the unique index is partial
        del doc["client_message_id"]
    return doc


def search_doc(search: SearchSet, expires_at: datetime, row_count: int) -> Doc:
    return {
        "_id": search.id,
        "org": search.org,
        "user": search.user,
        "conversation_id": search.conversation_id,
        "query": search.query,
        "people": [p.to_wire() for p in search.people],
        "created_at": search.created_at,
        "expires_at": expires_at,
        "row_count": row_count,
    }


def search_from_doc(doc: Doc) -> SearchSet:
    return SearchSet(
        doc["_id"],
        doc["org"],
        doc["user"],
        doc["conversation_id"],
        doc["query"],
        [Person.from_wire(p) for p in doc["people"]],
        doc["created_at"],
    )


def is_duplicate(error: DuplicateKeyError | BulkWriteError) -> bool:
    if isinstance(error, DuplicateKeyError):
        return True
    return any(e.get("code") == DUPLICATE_KEY for e in error.details.get("writeErrors", []))


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
