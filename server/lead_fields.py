"""Lead fields as users send them, validated: the bodies of `POST` and
`PATCH /api/leads` and the rows of a CSV import (`server/jobs/imports.py`)
share these models, so both say the same thing about the same bad value."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from leadstream.store.records import LeadInput

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE = re.compile(r"^\+?[0-9 ().\-/]{6,30}$")


def _email(value: str) -> str:
    if len(value) > 254 or not EMAIL.match(value):
        raise ValueError(f"{value!r} is not an email address")
    return value


def _phone(value: str) -> str:
    if not PHONE.match(value) or sum(ch.isdigit() for ch in value) < 6:
        raise ValueError(f"{value!r} is not a phone number")
    return value


def _linkedin(value: str | None) -> str | None:
    if value and not re.match(r"^https?://", value):
        raise ValueError("linkedin must be an http(s) URL")
    return value or None


Email = Annotated[str, AfterValidator(_email)]
Phone = Annotated[str, AfterValidator(_phone)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Tag = Annotated[str, Field(min_length=1, max_length=50)]
Text = Annotated[str, Field(max_length=200)]
MAX_NOTES = 4000  # characters of a lead's free-text notes


class LeadFields(BaseModel):
    """Writable lead fields (PATCH: any subset)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Name | None = None
    title: Text | None = None
    company: Text | None = None
    industry: Text | None = None
    location: Text | None = None
    emails: Annotated[list[Email], Field(max_length=20)] | None = None
    phones: Annotated[list[Phone], Field(max_length=20)] | None = None
    linkedin: Annotated[str | None, Field(max_length=300), AfterValidator(_linkedin)] = None
    tags: Annotated[list[Tag], Field(max_length=50)] | None = None
    notes: Annotated[str, Field(max_length=MAX_NOTES)] | None = None


class LeadCreate(LeadFields):
    name: Name
    personId: Annotated[str, Field(min_length=1, max_length=300)] | None = None

    def to_input(self, source: str) -> LeadInput:
        """The lead to upsert from `source`: its `personId`, else one derived
        from its contacts."""
        return LeadInput(
            source=source,
            person_id=self.personId
            or derived_person_id(self.name, self.company, self.emails or [], self.linkedin),
            name=self.name,
            title=self.title,
            company=self.company,
            industry=self.industry,
            location=self.location,
            emails=tuple(self.emails) if self.emails is not None else None,
            phones=tuple(self.phones) if self.phones is not None else None,
            linkedin=self.linkedin,
            tags=tuple(self.tags) if self.tags is not None else None,
            notes=self.notes,
        )


def derived_person_id(
    name: str, company: str | None, emails: list[str], linkedin: str | None
) -> str:
    """The identity of a lead without a provider id: first email, else the
    LinkedIn URL, else name + company (so saving it twice updates it)."""
    if emails:
        return "email:" + emails[0].strip().lower()
    if linkedin:
        return "linkedin:" + linkedin.strip().lower().rstrip("/")
    return (
        "name:" + " ".join(name.lower().split()) + "|" + " ".join((company or "").lower().split())
    )
