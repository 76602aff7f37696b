"""The zero-setup lead provider: the people directory kept in the store."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from leadstream.agent.providers.base import LeadSearch, LookupCredits
from leadstream.store.base import DirectoryStore
from leadstream.store.people_generator import INDUSTRY_NAMES, SOURCE
from leadstream.store.records import PeopleQuery, Person
from leadstream.store.titles import title_words

# What people call an industry -> the directory's industry name.
INDUSTRY_ALIASES: dict[str, str] = {
    **{name: name for name in INDUSTRY_NAMES},
    "fin tech": "fintech",
    "financial technology": "fintech",
    "payments": "fintech",
    "software": "saas",
    "b2b saas": "saas",
    "health": "healthcare",
    "health care": "healthcare",
    "healthtech": "healthcare",
    "medtech": "healthcare",
    "ecommerce": "e-commerce",
    "e commerce": "e-commerce",
    "security": "cybersecurity",
    "cyber security": "cybersecurity",
    "education": "edtech",
    "ed tech": "edtech",
    "supply chain": "logistics",
    "shipping": "logistics",
    "insurtech": "insurance",
    "biotechnology": "biotech",
    "life sciences": "biotech",
    "telecom": "telecommunications",
    "telco": "telecommunications",
    "games": "gaming",
    "video games": "gaming",
    "cars": "automotive",
    "proptech": "real estate",
    "realestate": "real estate",
    "legaltech": "legal",
    "law": "legal",
    # what sales people and models also say (issue 13)
    "crypto": "fintech",
    "web3": "fintech",
    "blockchain": "fintech",
    "banking": "fintech",
    "financial services": "fintech",
    "pharma": "biotech",
    "pharmaceuticals": "biotech",
    "medical": "healthcare",
    "digital health": "healthcare",
    "cyber": "cybersecurity",
    "infosec": "cybersecurity",
    "e-learning": "edtech",
    "elearning": "edtech",
    "freight": "logistics",
    "transportation": "logistics",
    "industrial": "manufacturing",
    "publishing": "media",
    "advertising": "media",
    "adtech": "media",
    "entertainment": "media",
    "renewables": "energy",
    "cleantech": "energy",
    "utilities": "energy",
    "property": "real estate",
    "real-estate": "real estate",
    "consultancy": "consulting",
    "telecoms": "telecommunications",
    "esports": "gaming",
    "mobility": "automotive",
    "hospitality": "travel",
    "tourism": "travel",
}
LOCATION_ALIASES: dict[str, str] = {
    "us": "united states",
    "usa": "united states",
    "the us": "united states",
    "the usa": "united states",
    "america": "united states",
    "the united states": "united states",
    "uk": "united kingdom",
    "the uk": "united kingdom",
    "england": "united kingdom",
    "nyc": "new york",
    "sf": "san francisco",
    "bay area": "san francisco",
    "holland": "netherlands",
    "the netherlands": "netherlands",
    "new york city": "new york",
    "silicon valley": "san francisco",
    "britain": "united kingdom",
    "great britain": "united kingdom",
    "münchen": "munich",
    "munchen": "munich",
    "zürich": "zurich",
    "são paulo": "sao paulo",
    "bengaluru": "bangalore",
    "warszawa": "warsaw",
    "deutschland": "germany",
}
SENIORITIES = ("c_level", "vp", "head", "director", "manager", "senior", "entry")


def canonical_industry(text: str | None) -> str | None:
    """The directory's name for an industry, or None if it is not one we know."""
    if not text:
        return None
    return INDUSTRY_ALIASES.get(text.strip().lower())


class LocalDirectoryProvider:
    """Searches the store's people directory; pages stream as SQLite finds them.

    :param store: the store holding the directory.
    :param chunk_size: rows per page handed to the caller.
    """

    name = "local-directory"
    source = SOURCE
    credits_used = 0  # the directory is free

    def __init__(self, store: DirectoryStore, *, chunk_size: int = 25) -> None:
        self._store = store
        self._chunk_size = chunk_size

    def search(self, query: LeadSearch, *, limit: int) -> AsyncGenerator[list[Person], None]:
        industry = None
        if query.industry:
            # An industry we do not know matches nothing rather than everything.
            industry = canonical_industry(query.industry) or query.industry.strip().lower()
        location = None
        if query.location:
            location = query.location.strip().lower()
            location = LOCATION_ALIASES.get(location, location)
        seniority = query.seniority.strip().lower().replace("-", "_") if query.seniority else None
        if seniority in ("c", "c_suite", "clevel", "executive"):
            seniority = "c_level"
        people_query = PeopleQuery(
            title_terms=tuple(title_words(query.title)) if query.title else (),
            company=query.company.strip() if query.company else None,
            industry=industry,
            location=location,
            seniority=seniority,
            keywords=tuple(k.strip() for k in query.keywords if k.strip()),
            has_phone=query.has_phone,
            has_email=query.has_email,
        )
        return self._store.stream_people(people_query, limit=limit, chunk_size=self._chunk_size)

    async def lookup(
        self,
        *,
        person_id: str | None = None,
        name: str | None = None,
        company: str | None = None,
        linkedin: str | None = None,
        credits: LookupCredits | None = None,  # the directory is free
    ) -> Person | None:
        if person_id:
            return await self._store.get_person(person_id)
        found = await self._store.find_people(
            name=name, company=company, linkedin=linkedin, limit=1
        )
        return found[0] if found else None
