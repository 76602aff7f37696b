"""One person, one lead: what identifies a person within an org, and how a
lead takes in what a new write says about that person.

A new lead whose normalised email, phone or LinkedIn URL (its identity keys)
matches a lead of the same org is merged into that lead instead of becoming
a second one: contacts, tags and sources are unioned (in order, the stored
ones first), and every other non-empty field of the newer write wins.

One exception: a source's own ids tell its people apart, so contacts never
merge a new lead into a lead made by the same source under another id (two
people of the directory, or of RocketReach, sharing an office line or a
fictional 555-01xx number stay two leads; the same person from the
directory and from a CSV import becomes one). Within one call, a lead is
also found by the (source, person_id) of each write merged into it; later
calls find it by its contacts again (no aliases are stored).

Both store backends plan a bulk save with `LeadMatcher` and `plan_upsert`
here; what differs is only how they find stored leads by key (SQLite: the
`identity_keys` table; MongoDB: the multikey `identity_keys` field) and how
they write.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal, Protocol

from leadstream.store.records import Lead, LeadInput

Outcome = Literal["saved", "updated", "unchanged"]

# Fewer digits than this are an extension or a typo, not a number to match on.
MIN_PHONE_DIGITS = 6
# Fields of a write that replace the stored value when not empty.
SCALAR_FIELDS = ("name", "title", "company", "industry", "location", "linkedin", "notes")
_NOT_DIGIT = re.compile(r"\D+")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]{0,15}://")


def email_key(value: str) -> str | None:
    """`email:` and the address lowercased and trimmed; None if it has no `@`."""
    address = value.strip().lower()
    return f"email:{address}" if "@" in address else None


def phone_key(value: str) -> str | None:
    """`phone:+` and the number's digits; None if it has too few to be one."""
    digits = _NOT_DIGIT.sub("", value)
    return f"phone:+{digits}" if len(digits) >= MIN_PHONE_DIGITS else None


def linkedin_key(value: str) -> str | None:
    """`linkedin:` and the URL lowercased without scheme, `www.`, query,
    fragment or trailing slash (`linkedin:linkedin.com/in/ada`)."""
    url = _SCHEME.sub("", value.strip().lower())
    url = url.split("?", 1)[0].split("#", 1)[0]
    url = url.removeprefix("www.").rstrip("/")
    return f"linkedin:{url}" if url else None


def identity_keys(
    emails: Iterable[str] | None, phones: Iterable[str] | None, linkedin: str | None
) -> tuple[str, ...]:
    """The identity keys of these contacts, each once, in order."""
    return _identity_keys(tuple(emails or ()), tuple(phones or ()), linkedin or None)


# A bulk save asks for the keys of each lead several times (matching, then
# writing): computed once per distinct contacts of a batch.
@lru_cache(maxsize=20_000)
def _identity_keys(
    emails: tuple[str, ...], phones: tuple[str, ...], linkedin: str | None
) -> tuple[str, ...]:
    keys = [email_key(email) for email in emails]
    keys += [phone_key(phone) for phone in phones]
    keys.append(linkedin_key(linkedin) if linkedin else None)
    return tuple(dict.fromkeys(key for key in keys if key is not None))


def lead_keys(lead: Lead) -> tuple[str, ...]:
    return identity_keys(lead.emails, lead.phones, lead.linkedin)


def input_keys(item: LeadInput) -> tuple[str, ...]:
    return identity_keys(item.emails, item.phones, item.linkedin)


def merged(existing: Lead, item: LeadInput) -> Lead:
    """`existing` enriched by `item`: its non-empty fields win, its contacts,
    tags and source are added to the stored ones (same key: kept once, as
    first spelled)."""
    fields: dict[str, Any] = {
        key: getattr(item, key) for key in SCALAR_FIELDS if getattr(item, key)
    }
    fields["emails"] = _union(existing.emails, item.emails or (), email_key)
    fields["phones"] = _union(existing.phones, item.phones or (), phone_key)
    fields["tags"] = _union(existing.tags, item.tags or (), str)
    fields["sources"] = _union(existing.sources or (existing.source,), (item.source,), str)
    return replace(existing, **fields)


def with_fields(existing: Lead, fields: dict[str, Any]) -> Lead:
    """`existing` with these fields set as given (an edit: lists replace the
    stored ones; keys as in `LeadInput`)."""
    clean: dict[str, Any] = {
        key: tuple(value) if key in ("emails", "phones", "tags") else value
        for key, value in fields.items()
    }
    return replace(existing, **clean)


def new_lead(org: str, lead_id: str, item: LeadInput, at: str) -> Lead:
    """The lead a write of `item` makes when it matches none."""
    return Lead(
        id=lead_id,
        org=org,
        person_id=item.person_id,
        source=item.source,
        name=item.name,
        title=item.title or "",
        company=item.company or "",
        industry=item.industry,
        location=item.location,
        emails=item.emails or (),
        phones=item.phones or (),
        linkedin=item.linkedin,
        tags=item.tags or (),
        created_at=at,
        updated_at=at,
        notes=item.notes or None,
        sources=(item.source,),
    )


def _union(first: Iterable[str], second: Iterable[str], key: Any) -> tuple[str, ...]:
    seen: dict[Any, str] = {}
    for value in (*first, *second):
        seen.setdefault(key(value) or value, value)
    return tuple(seen.values())


class LeadWrites(Protocol):
    """How a backend writes the leads of one atomic write."""

    def insert(self, item: LeadInput) -> Lead: ...

    def update(self, existing: Lead, changed: Lead) -> Lead:
        """Write `changed` unless it equals `existing`; return what is stored."""


class LeadMatcher:
    """Finds the lead a write goes to: the one of the same (source,
    person_id), else the oldest one of another source sharing an identity
    key (the item's keys in order), among the stored leads it was given and
    those written since.

    :param stored: the org's leads that may match the write (the backend
        finds them by person and by key).
    :param sources: the sources of the write's items; only leads of other
        sources are looked up by key (a save from one source into leads of
        that source alone does no key work).
    """

    def __init__(self, stored: Iterable[Lead], sources: Iterable[str]) -> None:
        self._sources = frozenset(sources)
        self._leads: dict[str, Lead] = {}
        self._by_person: dict[tuple[str, str], str] = {}
        self._by_key: dict[str, list[str]] = {}  # key -> lead ids, oldest first
        # Ids sort by creation: the oldest lead holding a key answers for it.
        for lead in sorted(stored, key=lambda lead: lead.id):
            self.remember(lead)

    def find(self, item: LeadInput) -> Lead | None:
        lead_id = self._by_person.get((item.source, item.person_id))
        if lead_id is not None:
            return self._leads[lead_id]
        if not self._by_key:
            return None
        for key in input_keys(item):
            for candidate in self._by_key.get(key, ()):
                lead = self._leads[candidate]
                if lead.source != item.source:
                    return lead
        return None

    def remember(self, lead: Lead, person: tuple[str, str] | None = None) -> None:
        """Know `lead` as it is now (new, or its latest version), and as the
        lead of `person` (the (source, person_id) of a write merged into it)."""
        self._leads[lead.id] = lead
        self._by_person.setdefault((lead.source, lead.person_id), lead.id)
        if person is not None:
            self._by_person.setdefault(person, lead.id)
        if self._sources == {lead.source}:
            return  # no item may be merged into it by contact
        for key in lead_keys(lead):
            holders = self._by_key.setdefault(key, [])
            if lead.id not in holders:
                holders.append(lead.id)

    def current(self, lead_id: str) -> Lead:
        return self._leads[lead_id]


@dataclass(frozen=True, slots=True)
class UpsertPlan:
    """What a bulk save did: per distinct (source, person_id) of its items
    what happened (an item merged into another lead counts as `updated`, or
    `unchanged` if it added nothing), and the leads written, each once."""

    saved: int
    updated: int
    unchanged: int
    lead_ids: list[str]


def plan_upsert(items: list[LeadInput], matcher: LeadMatcher, writes: LeadWrites) -> UpsertPlan:
    """Write each item into the lead it matches, or a new one."""
    outcome: dict[tuple[str, str], Outcome] = {}
    lead_ids: dict[str, None] = {}
    for item in items:
        key = (item.source, item.person_id)
        existing = matcher.find(item)
        if existing is None:
            lead = writes.insert(item)
            status: Outcome = "saved"
        else:
            lead = writes.update(existing, merged(existing, item))
            status = "updated" if lead is not existing else "unchanged"
        before = outcome.get(key)
        # A person seen again in the batch keeps `saved`; `unchanged` may become `updated`.
        outcome[key] = status if before is None or before == "unchanged" else before
        matcher.remember(lead, key)
        lead_ids[lead.id] = None
    counts = {"saved": 0, "updated": 0, "unchanged": 0}
    for status in outcome.values():
        counts[status] += 1
    return UpsertPlan(counts["saved"], counts["updated"], counts["unchanged"], list(lead_ids))
