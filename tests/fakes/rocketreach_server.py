"""A stand-in for RocketReach's API over real HTTP, for tests.

It speaks the documented request and response shapes (see the module
docstring of `leadstream.agent.providers.rocketreach` for the sources):
`Api-Key` header, `POST /api/v2/person/search` (and `/api/v2/search`, the
official client's path) with `{"query", "start", "page_size"}` answering
201 `{"profiles", "pagination": {"start", "next", "total"}}` without
contacts, `GET /api/v2/person/lookup` by `id`, `name` + `current_employer`
or `linkedin_url`, and `GET /api/v2/person/checkStatus?ids=..`.

The people are generated deterministically: person `i` has id `10000 + i`;
two in five have a phone number (`i % 5` is 0 or 2); most have a
professional email. Lookups of one person in four (`i % 4 == 1`) first
answer `searching` and complete after one (`i % 8 == 1`) or two
(`i % 8 == 5`) status polls. Contacts are revealed as asked:
`reveal_professional_email`, `reveal_personal_email`, `reveal_phone`.

Switches for tests: `fail_next()` makes the next requests answer 429 (with
`Retry-After`) or 5xx; `rate_limit_per_s` answers 429 to a client going
faster than that (a server-side token bucket of one second's burst);
`lookup_delay_s` makes lookups slow; `requests` counts requests per
endpoint and `arrivals` keeps their times.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

API_KEY = "rr-test-key"
FIRST_ID = 10_000

FIRST_NAMES = ("Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Radia")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov")
TITLES = (
    "CTO",
    "VP Engineering",
    "Head of Sales",
    "CEO",
    "Director of Marketing",
    "Software Engineer",
    "Chief Technology Officer",
    "Product Manager",
)
EMPLOYERS = (
    ("Ledgerly", "fintech", "ledgerly.io"),
    ("Paystream", "fintech", "paystream.com"),
    ("Cloudnest", "saas", "cloudnest.dev"),
    ("Medivio", "healthcare", "medivio.health"),
    ("Shipwise", "logistics", "shipwise.co"),
    ("Coinbridge", "fintech", "coinbridge.finance"),
    ("Brightlearn", "edtech", "brightlearn.org"),
    ("Securon", "cybersecurity", "securon.net"),
    ("Tinyshop", "e-commerce", "tinyshop.store"),
    ("Quillsoft", "saas", "quillsoft.app"),
    ("Northbank", "fintech", "northbank.co.uk"),
)
PLACES = (
    ("San Francisco", "California", "United States"),
    ("New York", "New York", "United States"),
    ("London", "England", "United Kingdom"),
    ("Berlin", "Berlin", "Germany"),
    ("Austin", "Texas", "United States"),
    ("Amsterdam", "North Holland", "Netherlands"),
)
FACETS = ("name", "current_title", "current_employer", "geo", "company_industry", "keyword")


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request as the fake saw it."""

    endpoint: str
    at: float


@dataclass(slots=True)
class _Failure:
    status: int
    remaining: int
    retry_after: int | None
    endpoint: str | None


def make_person(i: int) -> dict[str, Any]:
    """Person `i`'s full profile (contacts included), as a lookup answers it."""
    first = FIRST_NAMES[i % len(FIRST_NAMES)]
    last = LAST_NAMES[(i // len(FIRST_NAMES)) % len(LAST_NAMES)]
    employer, industry, domain = EMPLOYERS[(i * 7) % len(EMPLOYERS)]
    city, region, country = PLACES[(i * 5) % len(PLACES)]
    slug = f"{first}-{last}-{i}".lower()
    emails: list[dict[str, Any]] = []
    if i % 3 == 0:
        emails.append(
            {"email": f"{slug}@gmail.com", "type": "personal", "smtp_valid": "valid", "grade": "B"}
        )
    if i % 11 == 4:
        emails.append(
            {
                "email": f"{first}.{last}@{domain}".lower(),
                "type": "professional",
                "smtp_valid": "invalid",
                "grade": "F",
            }
        )
    elif i % 7 != 3:
        emails.append(
            {
                "email": f"{first}.{last}{i}@{domain}".lower(),
                "type": "professional",
                "smtp_valid": "valid",
                "grade": "A",
            }
        )
    phones: list[dict[str, Any]] = []
    if i % 5 in (0, 2):
        phones.append(
            {
                "number": f"+1 415 555 {i:04d}",
                "type": "mobile",
                "validity": "valid",
                "recommended": True,
            }
        )
    return {
        "id": FIRST_ID + i,
        "status": "complete",
        "name": f"{first} {last}",
        "first_name": first,
        "last_name": last,
        "current_title": TITLES[(i * 3) % len(TITLES)],
        "current_employer": employer,
        "current_employer_domain": domain,
        "industry": industry,
        "linkedin_url": f"https://www.linkedin.com/in/{slug}",
        "location": f"{city}, {region}, {country}",
        "city": city,
        "region": region,
        "country": country,
        "emails": emails,
        "phones": phones,
    }


def search_profile(person: dict[str, Any]) -> dict[str, Any]:
    """What People Search shows of a person: no contacts."""
    keys = ("id", "name", "current_title", "current_employer", "linkedin_url", "location")
    return {key: person[key] for key in keys} | {
        "city": person["city"],
        "region": person["region"],
        "country": person["country"],
    }


def _words(text: str) -> set[str]:
    return set(re.findall(r"[\w-]+", text.lower()))


def matches(person: dict[str, Any], query: dict[str, list[str]]) -> bool:
    """RocketReach-like facet matching: a value matches a field holding all
    its words; a facet matches with any of its values; every facet must."""
    fields = {
        "name": (person["name"],),
        "current_title": (person["current_title"],),
        "current_employer": (person["current_employer"],),
        "geo": (person["location"],),
        "company_industry": (person["industry"],),
        "keyword": (person["name"], person["current_title"], person["current_employer"]),
    }
    return all(
        any(_words(value) <= _words(field) for value in values for field in fields[facet])
        for facet, values in query.items()
    )


def _linkedin_key(url: str) -> str:
    url = url.strip().lower().removeprefix("https://").removeprefix("http://")
    return url.removeprefix("www.").rstrip("/")


class FakeRocketReach:
    """RocketReach's People Search and Lookup on a local port.

    :param people: how many generated people it knows.
    :param api_key: the one key it accepts.
    :param rate_limit_per_s: answer 429 to requests beyond this rate (None: never).
    """

    def __init__(
        self, *, people: int = 1000, api_key: str = API_KEY, rate_limit_per_s: float | None = None
    ) -> None:
        self.people = [make_person(i) for i in range(people)]
        self.api_key = api_key
        self.rate_limit_per_s = rate_limit_per_s
        self.requests: Counter[str] = Counter()
        self.arrivals: list[Arrival] = []
        self.search_bodies: list[dict[str, Any]] = []
        self.lookups_answered = 0
        self.throttled = 0
        self.lookup_delay_s = 0.0
        self._by_id = {person["id"]: person for person in self.people}
        self._failures: list[_Failure] = []
        self._polls: Counter[int] = Counter()
        self._revealed: dict[int, tuple[bool, bool, bool]] = {}
        self._tokens = rate_limit_per_s or 0.0
        self._refilled = time.monotonic()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> str:
        """Listen on a free local port; returns the API's base URL."""
        app = web.Application(middlewares=[self._gate])
        for prefix in ("/api/v2/person/search", "/api/v2/search"):
            app.router.add_post(prefix, self._search)
        app.router.add_get("/api/v2/person/lookup", self._lookup)
        app.router.add_get("/api/v2/person/checkStatus", self._check_status)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/api/v2"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- switches --------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: int | None = None,
        endpoint: str | None = None,
    ) -> None:
        """Answer the next `count` requests (to `endpoint` only, if given:
        "search", "lookup" or "checkStatus") with `status`."""
        self._failures.append(_Failure(status, count, retry_after, endpoint))

    def person(self, i: int) -> dict[str, Any]:
        """Person `i`'s full profile."""
        return self.people[i]

    def search_results(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Everyone a search with `query` finds, in the order it pages them."""
        return [person for person in self.people if matches(person, query)]

    @staticmethod
    def polls_needed(person_id: int) -> int:
        i = person_id - FIRST_ID
        return {1: 1, 5: 2}.get(i % 8, 0)

    # -- the gate every request passes -----------------------------------------

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        endpoint = request.path.rsplit("/", 1)[-1]
        self.requests[endpoint] += 1
        self.arrivals.append(Arrival(endpoint, time.monotonic()))
        if request.headers.get("Api-Key") != self.api_key:
            return web.json_response({"status": 401, "message": "Invalid API Key"}, status=401)
        failure = next(
            (f for f in self._failures if f.endpoint in (None, endpoint) and f.remaining > 0), None
        )
        if failure is not None:
            failure.remaining -= 1
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            return web.json_response(
                {"detail": f"injected failure {failure.status}"},
                status=failure.status,
                headers=headers,
            )
        if not self._take_token():
            self.throttled += 1
            return web.json_response(
                {"detail": "Request was throttled. Expected available in 1 second."},
                status=429,
                headers={"Retry-After": "1"},
            )
        return await handler(request)

    def _take_token(self) -> bool:
        if self.rate_limit_per_s is None:
            return True
        now = time.monotonic()
        self._tokens = min(
            self.rate_limit_per_s, self._tokens + (now - self._refilled) * self.rate_limit_per_s
        )
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    # -- endpoints -------------------------------------------------------------

    async def _search(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.search_bodies.append(body)
        query = body.get("query") or {}
        start = body.get("start", 1)
        size = body.get("page_size", 10)
        unknown = sorted(set(query) - set(FACETS))
        if unknown:
            return _error(400, f"Unknown query facets: {', '.join(unknown)}")
        if any(not isinstance(v, list) for v in query.values()):
            return _error(400, "Each query facet takes a list of values")
        if not isinstance(start, int) or start < 1:
            return _error(400, "start must be 1 or more")
        if not isinstance(size, int) or not 1 <= size <= 100:
            return _error(400, "page_size must be between 1 and 100")
        found = self.search_results(query)
        page = found[start - 1 : start - 1 + size]
        return web.json_response(
            {
                "profiles": [search_profile(person) for person in page],
                "pagination": {"start": start, "next": start + len(page), "total": len(found)},
            },
            status=201,
        )

    async def _lookup(self, request: web.Request) -> web.Response:
        if self.lookup_delay_s:
            await asyncio.sleep(self.lookup_delay_s)
        params = request.query
        person = None
        if "id" in params:
            if not params["id"].isdigit():
                return _error(400, "id must be an integer")
            person = self._by_id.get(int(params["id"]))
        elif "linkedin_url" in params:
            key = _linkedin_key(params["linkedin_url"])
            person = next((p for p in self.people if _linkedin_key(p["linkedin_url"]) == key), None)
        elif "name" in params and "current_employer" in params:
            name, employer = params["name"].lower(), params["current_employer"].lower()
            person = next(
                (
                    p
                    for p in self.people
                    if p["name"].lower() == name and p["current_employer"].lower() == employer
                ),
                None,
            )
        else:
            return _error(400, "Specify id, linkedin_url, or name with current_employer")
        if person is None:
            return _error(404, "Not found.")
        self.lookups_answered += 1
        reveal = (
            params.get("reveal_professional_email") == "true",
            params.get("reveal_personal_email") == "true",
            params.get("reveal_phone") == "true",
        )
        self._revealed[person["id"]] = reveal
        self._polls[person["id"]] = 0
        if self.polls_needed(person["id"]):
            keys = ("id", "name", "current_title", "current_employer")
            return web.json_response({key: person[key] for key in keys} | {"status": "searching"})
        return web.json_response(self._revealed_profile(person))

    async def _check_status(self, request: web.Request) -> web.Response:
        ids = [
            int(part)
            for value in request.query.getall("ids", [])
            for part in value.split(",")
            if part.strip().isdigit()
        ]
        if not ids:
            return _error(400, "ids is required")
        answer = []
        for person_id in ids:
            person = self._by_id.get(person_id)
            if person is None or person_id not in self._revealed:
                continue
            self._polls[person_id] += 1
            if self._polls[person_id] >= self.polls_needed(person_id):
                answer.append(self._revealed_profile(person))
            else:
                answer.append({"id": person_id, "status": "progress"})
        if not answer:
            return _error(404, "Not found.")
        return web.json_response(answer)

    def _revealed_profile(self, person: dict[str, Any]) -> dict[str, Any]:
        professional, personal, phone = self._revealed[person["id"]]
        shown = {"professional": professional, "personal": personal}
        emails = [e for e in person["emails"] if shown[e["type"]]]
        return person | {"emails": emails, "phones": person["phones"] if phone else []}


def _error(status: int, detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status)
