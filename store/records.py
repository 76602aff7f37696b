"""The records the store keeps, and their wire shapes (camelCase, PROTOCOL.md).

Records are plain frozen dataclasses: backends build them, everything above
the store reads them. `to_wire()` gives the JSON shape clients see.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

ChangeOp = Literal["insert", "update", "delete"]
JobStatus = Literal["queued", "running", "done", "failed"]


def iso_now() -> str:
    """Now as ISO-8601 UTC with milliseconds: `2026-11-28T09:15:02.123Z`."""
    return iso_from_epoch(time.time())


def iso_from_epoch(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _IdClock:
    """Microseconds that strictly increase within the process, so ids made
    one after the other sort in the order they were made."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def tick(self) -> int:
        with self._lock:
            self._last = max(time.time_ns() // 1000, self._last + 1)
            return self._last


_ID_CLOCK = _IdClock()


def new_id(prefix: str) -> str:
    """A short id that sorts by creation time (microseconds, then random)."""
    return f"{prefix}_{_ID_CLOCK.tick():014x}{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class Person:
    """One entry of a lead provider (the local directory, RocketReach...)."""

    person_id: str
    source: str
    name: str
    title: str
    company: str
    industry: str | None = None
    location: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    linkedin: str | None = None
    seniority: str | None = None
    department: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "personId": self.person_id,
            "source": self.source,
            "name": self.name,
            "title": self.title,
            "company": self.company,
            "industry": self.industry,
            "location": self.location,
            "emails": list(self.emails),
            "phones": list(self.phones),
            "linkedin": self.linkedin,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Person:
        return cls(
            person_id=data["personId"],
            source=data["source"],
            name=data["name"],
            title=data.get("title") or "",
            company=data.get("company") or "",
            industry=data.get("industry"),
            location=data.get("location"),
            emails=tuple(data.get("emails") or ()),
            phones=tuple(data.get("phones") or ()),
            linkedin=data.get("linkedin"),
        )


@dataclass(frozen=True, slots=True)
class LeadInput:
    """What a write supplies for one lead. `None` means "leave as it is" on update."""

    source: str
    person_id: str
    name: str
    title: str | None = None
    company: str | None = None
    industry: str | None = None
    location: str | None = None
    emails: tuple[str, ...] | None = None
    phones: tuple[str, ...] | None = None
    linkedin: str | None = None
    tags: tuple[str, ...] | None = None
    notes: str | None = None

    @classmethod
    def from_person(cls, person: Person) -> LeadInput:
        return cls(
            source=person.source,
            person_id=person.person_id,
            name=person.name,
            title=person.title,
            company=person.company,
            industry=person.industry,
            location=person.location,
            emails=person.emails,
            phones=person.phones,
            linkedin=person.linkedin,
        )


@dataclass(frozen=True, slots=True)
class Lead:
    """A saved lead of one org; (org, source, person_id) is unique, and a
    person has one lead per org (`store.lead_identity`): `source` and
    `person_id` name the write that made it, `sources` every source that
    contributed to it since."""

    id: str
    org: str
    person_id: str
    source: str
    name: str
    title: str
    company: str
    industry: str | None
    location: str | None
    emails: tuple[str, ...]
    phones: tuple[str, ...]
    linkedin: str | None
    tags: tuple[str, ...]
    created_at: str
    updated_at: str
    notes: str | None = None
    sources: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "personId": self.person_id,
            "source": self.source,
            "name": self.name,
            "title": self.title,
            "company": self.company,
            "industry": self.industry,
            "location": self.location,
            "emails": list(self.emails),
            "phones": list(self.phones),
            "linkedin": self.linkedin,
            "tags": list(self.tags),
            "notes": self.notes,
            "sources": list(self.sources or (self.source,)),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }

    @classmethod
    def from_wire(cls, org: str, wire: dict[str, Any]) -> Lead:
        """The lead of a `to_wire()` shape (change-log entries keep leads so);
        entries written before `notes` and `sources` existed lack them."""
        return cls(
            id=wire["id"],
            org=org,
            person_id=wire["personId"],
            source=wire["source"],
            name=wire["name"],
            title=wire["title"],
            company=wire["company"],
            industry=wire.get("industry"),
            location=wire.get("location"),
            emails=tuple(wire["emails"]),
            phones=tuple(wire["phones"]),
            linkedin=wire.get("linkedin"),
            tags=tuple(wire["tags"]),
            created_at=wire["createdAt"],
            updated_at=wire["updatedAt"],
            notes=wire.get("notes"),
            sources=tuple(wire.get("sources") or (wire["source"],)),
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One versioned change of an org's leads (the change log's entry)."""

    org: str
    version: int
    op: ChangeOp
    lead_id: str
    lead: Lead | None
    at: str

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"version": self.version, "op": self.op, "id": self.lead_id}
        if self.lead is not None:
            wire["lead"] = self.lead.to_wire()
        wire["at"] = self.at
        return wire


@dataclass(frozen=True, slots=True)
class UpsertResult:
    saved: int
    updated: int
    unchanged: int
    changes: list[Change]
    leads: list[Lead]


@dataclass(frozen=True, slots=True)
class LeadStats:
    total: int = 0
    with_email: int = 0
    with_phone: int = 0
    with_both: int = 0

    def to_wire(self) -> dict[str, int]:
        return {
            "total": self.total,
            "withEmail": self.with_email,
            "withPhone": self.with_phone,
            "withBoth": self.with_both,
        }


@dataclass(frozen=True, slots=True)
class LeadFilter:
    """Filters of `GET /api/leads` and exports; all optional."""

    has_phone: bool = False
    has_email: bool = False
    q: str | None = None
    company: str | None = None
    tag: str | None = None
    ids: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class LeadPage:
    leads: list[Lead]
    next_cursor: str | None
    version: int


@dataclass(frozen=True, slots=True)
class ChangesSince:
    changes: list[Change]
    version: int
    reset: bool


@dataclass(frozen=True, slots=True)
class PeopleQuery:
    """A directory search. `title_terms` are normalized words that must all
    appear in the title (see `store.titles`)."""

    title_terms: tuple[str, ...] = ()
    company: str | None = None
    industry: str | None = None
    location: str | None = None
    seniority: str | None = None
    keywords: tuple[str, ...] = ()
    has_phone: bool = False
    has_email: bool = False


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    org: str
    user: str
    title: str
    created_at: str
    updated_at: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    conversation_id: str
    org: str
    user: str
    role: Literal["user", "assistant"]
    text: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    status: str = "done"  # "streaming", "done", "stopped", "failed"
    client_message_id: str | None = None
    reply_id: str | None = None
    usage: dict[str, Any] | None = None
    created_at: str = ""

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"id": self.id, "role": self.role, "text": self.text}
        if self.tool_calls:
            wire["toolCalls"] = self.tool_calls
        if self.role == "assistant":
            wire["status"] = self.status
        wire["createdAt"] = self.created_at
        return wire


@dataclass(frozen=True, slots=True)
class SearchSet:
    """The rows of one search, kept (until `expires_at`) so tools can refer
    to them by `id` instead of passing rows through the model."""

    id: str
    org: str
    user: str
    conversation_id: str | None
    query: dict[str, Any]
    people: list[Person]
    created_at: str


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    org: str
    user: str
    kind: Literal["export", "import"]
    status: JobStatus
    params: dict[str, Any]
    done: int
    total: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: str
    updated_at: str

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "jobId": self.id,
            "kind": self.kind,
            "status": self.status,
            "done": self.done,
            "total": self.total,
        }
        if self.result is not None:
            wire["result"] = self.result
        if self.error is not None:
            wire["error"] = self.error
        return wire
