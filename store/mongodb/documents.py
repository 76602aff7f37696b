"""How records are stored as MongoDB documents and read back.

Fields are snake_case like the SQLite columns. A lead document also carries
derived fields for its indexes and search (`LeadKeys`, `identity_keys`).
Also here: expiry dates as BSON dates (`utc`) and telling a duplicate-key
write error (`is_duplicate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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


def conversation_doc(c: Conversation) -> Doc:
    return {
        "_id": c.id,
        "org": c.org,
        "user": c.user,
        "title": c.title,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    }


def conversation_from_doc(doc: Doc) -> Conversation:
    return Conversation(
        doc["_id"], doc["org"], doc["user"], doc["title"], doc["created_at"], doc["updated_at"]
    )


def job_doc(job: Job) -> Doc:
    return {
        "_id": job.id,
        "org": job.org,
        "user": job.user,
        "kind": job.kind,
        "status": job.status,
        "params": job.params,
        "done": job.done,
        "total": job.total,
        "result": job.result,
        "error": job.error,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


def job_from_doc(doc: Doc) -> Job:
    return Job(
        doc["_id"],
        doc["org"],
        doc["user"],
        doc["kind"],
        doc["status"],
        doc["params"],
        doc["done"],
        doc["total"],
        doc["result"],
        doc["error"],
        doc["created_at"],
        doc["updated_at"],
    )


def message_doc(m: Message) -> Doc:
    doc: Doc = {
        "_id": m.id,
        "conversation_id": m.conversation_id,
        "org": m.org,
        "user": m.user,
        "role": m.role,
        "text": m.text,
        "tool_calls": m.tool_calls,
        "status": m.status,
        "reply_id": m.reply_id,
        "usage": m.usage,
        "created_at": m.created_at,
    }
    if m.client_message_id is not None:  # absent, not null: the unique index is partial
        doc["client_message_id"] = m.client_message_id
    return doc


def message_from_doc(doc: Doc) -> Message:
    return Message(
        id=doc["_id"],
        conversation_id=doc["conversation_id"],
        org=doc["org"],
        user=doc["user"],
        role=doc["role"],
        text=doc["text"],
        tool_calls=doc["tool_calls"],
        status=doc["status"],
        client_message_id=doc.get("client_message_id"),
        reply_id=doc.get("reply_id"),
        usage=doc.get("usage"),
        created_at=doc["created_at"],
    )


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
