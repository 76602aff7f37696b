"""The interface every lead provider offers the tools."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Protocol

from leadstream.errors import LeadstreamError
from leadstream.store.records import Person


class LookupCredits(Protocol):
    """The paid lookups a search or lookup may still do (the org's daily
    credits): `take()` before each paid lookup, False when none are left;
    `give_back()` when the lookup turned out free (not found, failed)."""

    async def take(self) -> bool: ...

    def give_back(self) -> None: ...


@dataclass(frozen=True, slots=True)
class LeadSearch:
    """A provider-neutral search, as the `search_leads` tool received it;
    `credits` bounds the paid lookups a contact search may do (None: no bound)."""

    title: str | None = None
    company: str | None = None
    industry: str | None = None
    location: str | None = None
    seniority: str | None = None
    keywords: tuple[str, ...] = ()
    has_phone: bool = False
    has_email: bool = False
    credits: LookupCredits | None = field(default=None, compare=False, repr=False)


class ProviderError(LeadstreamError):
    """A provider refused or failed a request; tools tell the model (and so
    the user) `code` and `message` instead of failing the reply."""


class LeadProvider(Protocol):
    """Finds people. `search` yields pages as they arrive, so rows can reach
    the client before the search is over. `credits_used` counts paid
    lookups since start (0 for free providers), so tools can show the cost."""

    name: str
    source: str

    @property
    def credits_used(self) -> int: ...

    def search(self, query: LeadSearch, *, limit: int) -> AsyncGenerator[list[Person], None]: ...

    async def lookup(
        self,
        *,
        person_id: str | None = None,
        name: str | None = None,
        company: str | None = None,
        linkedin: str | None = None,
        credits: LookupCredits | None = None,
    ) -> Person | None: ...
