"""The RocketReach lead provider: People Search to find people, People Lookup
to get their emails and phone numbers.

What RocketReach documents, and where it was checked:

- Base URL `https://api.rocketreach.co/api/v2`; the key goes in the
  `Api-Key` header (RocketReach's OpenAPI reference, `servers` and
  `RocketReachAPIKey`; the official client `rocketreach/rocketreach_python`,
  `gateway.py`).
- People Search is a POST of `{"query": {facet: [values]}, "start": 1..,
  "page_size": ..}` (official client `person_gateway.py::to_search_body`)
  answering `profiles` and `pagination`, whose `next` is the next `start`
  (official client `person_search.py::PersonSearchPaginator`). Facets used
  here: `current_title`, `current_employer`, `geo`, `company_industry`,
  `keyword` (the last from the reference's own example). Results carry no
  contact information: "please make a separate call to lookup that person"
  (docs.rocketreach.co/reference/people-search-api).
- People Lookup is `GET /person/lookup` with `id`, or `name` together with
  `current_employer`, or `linkedin_url` (OpenAPI reference, operation
  `create_person_lookup`). Its `status` is one of complete, failed, waiting,
  searching, progress; unfinished lookups are polled with
  `GET /person/checkStatus?ids=..`, which answers a list of profiles
  (docs.rocketreach.co/reference/rocketreach-check-person-lookup-status-people-lookup-api;
  the official client polls the same way, `person_gateway.py`).
- Contacts: `emails` is a list of `{"email", "type": "professional", "valid"}`
  (docs.rocketreach.co/reference/responses-and-errors); `smtp_valid` and
  `grade` (A, A-, B.. in the FAQ's credit table) are read when present.
  `phones` is a list of objects with a `number`; no page we could read shows
  one in full, so `validity` and `recommended` are read only when present.
  Which contacts a lookup reveals, and so which credits it spends, is chosen
  with `reveal_professional_email`, `reveal_personal_email` and `reveal_phone`
  (docs.rocketreach.co/reference/create_universal_person_lookup; the flag
  names as integrations spell them, the docs' table being cut short).
- Limits: a global 10 requests/s across all APIs, plus per-plan
  minute/hour/day/month quotas (15 person searches a minute on Essentials);
  throttled answers are 429 with `Retry-After` in seconds
  (docs.rocketreach.co/reference/rate-limits). 401 is a missing or invalid
  key, 403 a key without permission, 404 no such profile, 500 "try again
  later"; error bodies look like `{"status": 401, "message": "Invalid API
  Key"}` (docs.rocketreach.co/reference/responses-and-errors; the official
  client also reads `detail` and `error`).

Where the sources disagree, and what this module does:

- Search path. The API reference names `POST /person/search`; the official
  client posts to `search` under `/api/v2` (and the prose of the search page
  shows `https://api.rocketreach.co/v2/api/search`). The default is
  `/person/search`, the path of RocketReach's current reference (the
  client's layout dates from its v1 API); `search_path="/search"` selects
  the other.
- Reveal flags. They are documented on the Universal lookup (which answers
  403 to plans without universal credits); the classic lookup's reference
  lists `lookup_type` instead. They are sent on every lookup, and
  `lookup_path` can point at `/universal/person/lookup`.
- Response shapes. The reference mirrors show search answering a bare list
  and the status page shows lookups answering a list; the official client
  reads an object. Both shapes are accepted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Mapping
from contextlib import aclosing
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Literal

import aiohttp
import orjson

from leadstream.agent.providers.base import LeadSearch, LookupCredits, ProviderError
from leadstream.pacing import Backoff, TokenBucket
from leadstream.store.records import Person

log = logging.getLogger(__name__)

SOURCE: Final = "rocketreach"
DEFAULT_BASE_URL: Final = "https://api.rocketreach.co/api/v2"
MAX_PAGE_SIZE: Final = 100
NO_CREDITS: Final = "no lookup credits are left for today"
# Lookup statuses that mean "not finished yet, poll again".
PENDING_STATUSES: Final = frozenset({"waiting", "searching", "progress"})
# RocketReach's email grades, best first (its FAQ bills A and A- emails).
EMAIL_GRADES: Final = ("A", "A-", "B", "B-", "C", "D", "F")

ErrorCode = Literal[
    "invalid_api_key", "rate_limited", "provider_unavailable", "bad_request", "credits_exhausted"
]


class RocketReachError(ProviderError):
    """RocketReach refused or failed a request.

    :param code: `invalid_api_key` (401/403), `rate_limited` (429 past the
        retries, or a `Retry-After` too long to wait), `provider_unavailable`
        (5xx or connection failures past the retries) or `bad_request`
        (another 4xx, or a request this provider cannot make).
    :param message: what went wrong, with RocketReach's own message when it sent one.
    :param status: the HTTP status, when there was an answer.
    :param retry_after_s: how long RocketReach asked us to wait (`Retry-After`
        of a 429 too long to wait out here), so a caller that can come back
        later (a job: `Retry(defer_s)`) knows when.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(code, message)
        self.code: ErrorCode = code
        self.status = status
        self.retry_after_s = retry_after_s


# 5 tries over about 7 s at most; polls over about 30 s at most.
DEFAULT_RETRY: Final = Backoff(attempts=5, base_delay_s=0.5, max_delay_s=4.0)
DEFAULT_POLLING: Final = Backoff(attempts=6, base_delay_s=1.0, max_delay_s=8.0)


class RocketReachProvider:
    """Finds people with RocketReach; a `LeadProvider`.

    A plain search streams each page of search results (no credits spent).
    A search for people with a phone number or an email looks each candidate
    up (each lookup may cost a credit; see `lookups_used`), with at most
    `max_concurrency` lookups in flight and never more than the matches still
    missing, and streams the people who have the contact asked for in
    batches of `stream_batch` (or whatever is ready every `flush_s`). The
    query's `credits` bound the lookups: when they run out the search ends
    with what it found (`credits_exhausted` if it could look no one up).

    Every request passes the shared rate limiter; 429 answers are waited out
    (`Retry-After`), 5xx answers and connection failures are retried per
    `retry`, and 401/403 raise `RocketReachError("invalid_api_key")` at once.

    :param api_key: the RocketReach API key.
    :param base_url: the API root, e.g. a local fake's.
    :param search_path: People Search's path (`/person/search`, or `/search`
        as the official client has it; see the module docstring).
    :param lookup_path: People Lookup's path.
    :param check_status_path: the lookup status path polled for unfinished lookups.
    :param timeout_s: the limit on one HTTP request, in seconds.
    :param max_concurrency: lookups in flight at once.
    :param requests_per_s: the client-side rate limit (RocketReach's global one is 10/s).
    :param page_size: search results asked per page (at most 100).
    :param reveal_phones: ask lookups for phone numbers (premium credits);
        without it, phone searches are refused.
    :param stream_batch: people per streamed batch of a contact search.
    :param flush_s: a contact search streams what it has at least this often.
    :param retry: tries and backoff for 5xx answers and connection failures
        (429s count as tries too, but wait `Retry-After` instead).
    :param polling: tries and backoff for polling an unfinished lookup.
    :param max_retry_after_s: the longest `Retry-After` waited out; a longer
        one (a spent hourly or daily quota) raises `rate_limited` at once.
    :param session: an aiohttp session to use (and leave open); without one,
        the provider opens its own and `close()` closes it.

    `lookups_used` counts the lookups RocketReach answered over the
    provider's life (each may cost a credit), so callers can show the cost.
    """

    name = "rocketreach"
    source = SOURCE

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        search_path: str = "/person/search",
        lookup_path: str = "/person/lookup",
        check_status_path: str = "/person/checkStatus",
        timeout_s: float = 20.0,
        max_concurrency: int = 8,
        requests_per_s: float = 10,
        page_size: int = MAX_PAGE_SIZE,
        reveal_phones: bool = True,
        stream_batch: int = 10,
        flush_s: float = 1.0,
        retry: Backoff = DEFAULT_RETRY,
        polling: Backoff = DEFAULT_POLLING,
        max_retry_after_s: float = 60.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a RocketReach API key is required")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        if max_concurrency < 1 or stream_batch < 1 or retry.attempts < 1:
            raise ValueError("max_concurrency, stream_batch and retry.attempts must be positive")
        self._headers = {"Api-Key": api_key, "Accept": "application/json"}
        self._base_url = base_url.rstrip("/")
        self._search_path = search_path
        self._lookup_path = lookup_path
        self._check_status_path = check_status_path
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_concurrency = max_concurrency
        self._limiter = TokenBucket(requests_per_s)
        self._page_size = page_size
        self._reveal_phones = reveal_phones
        self._reveal = {
            "reveal_professional_email": "true",
            "reveal_phone": "true" if reveal_phones else "false",
        }
        self._stream_batch = stream_batch
        self._flush_s = flush_s
        self._retry = retry
        self._polling = polling
        self._max_retry_after_s = max_retry_after_s
        self._session = session
        self._owns_session = session is None
        self.lookups_used = 0

    # -- lifecycle -----------------------------------------------------------

    @property
    def credits_used(self) -> int:
        """Lookups RocketReach answered since start (each may cost a credit)."""
        return self.lookups_used

    async def open(self) -> None:
        """Open the provider's own HTTP session (done on first use otherwise)."""
        self._client()

    async def close(self) -> None:
        """Close the HTTP session if the provider opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> RocketReachProvider:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- LeadProvider --------------------------------------------------------

    async def search(self, query: LeadSearch, *, limit: int) -> AsyncGenerator[list[Person], None]:
        """Yield pages of people matching `query`, `limit` people at most.

        :param query: the search; `has_phone` / `has_email` make it look people up.
        :param limit: how many people in all.
        :raises RocketReachError: when RocketReach refuses or keeps failing.
        """
        if limit <= 0:
            return
        if query.has_phone and not self._reveal_phones:
            raise RocketReachError(
                "bad_request", "phone numbers are not revealed by this provider (reveal_phones)"
            )
        facets = search_facets(query)
        # aclosing: a caller that stops early stops the inner search (and its
        # lookups) at once, not whenever the generator is collected.
        if query.has_phone or query.has_email:
            async with aclosing(self._search_with_contacts(facets, query, limit)) as batches:
                async for batch in batches:
                    yield batch
            return
        async with aclosing(self._profile_pages(facets, limit=limit)) as pages:
            async for profiles in pages:
                yield [person_from_profile(profile) for profile in profiles]

    async def lookup(
        self,
        *,
        person_id: str | None = None,
        name: str | None = None,
        company: str | None = None,
        linkedin: str | None = None,
        credits: LookupCredits | None = None,
    ) -> Person | None:
        """One person with their contacts, by RocketReach id, by name and
        company, or by LinkedIn URL (tried in that order); None if unknown.

        :param credits: the lookup takes one of them (given back if unanswered).
        :raises RocketReachError: `bad_request` without an id, a LinkedIn URL,
            or a name and company; `credits_exhausted` when `credits` has none.
        :raises RocketReachError: when RocketReach refuses or keeps failing.
        """
        if person_id:
            params = {"id": person_id}
        elif linkedin:
            params = {"linkedin_url": linkedin}
        elif name and company:
            params = {"name": name, "current_employer": company}
        else:
            raise RocketReachError(
                "bad_request", "a lookup needs personId, linkedin, or name and company"
            )
        if credits is not None and not await credits.take():
            raise RocketReachError("credits_exhausted", NO_CREDITS)
        profile = await self._lookup_profile(params, credits)
        return person_from_profile(profile) if profile is not None else None

    # -- search --------------------------------------------------------------

    async def _profile_pages(
        self, facets: dict[str, list[str]], *, limit: int | None
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Search result pages until `limit` profiles (None: until they run
        out), each profile once."""
        start, sent = 1, 0
        seen: set[str] = set()
        while limit is None or sent < limit:
            size = self._page_size if limit is None else min(self._page_size, limit - sent)
            body = {"query": facets, "start": start, "page_size": size}
            answer = await self._request("POST", self._search_path, body=body)
            profiles, pagination = _search_answer(answer)
            fresh = []
            for profile in profiles:
                key = str(profile.get("id") or "")
                if key and key not in seen:
                    seen.add(key)
                    fresh.append(profile)
            fresh = fresh if limit is None else fresh[: limit - sent]
            if fresh:
                sent += len(fresh)
                yield fresh
            next_start = int(pagination.get("next") or start + len(profiles))
            total = pagination.get("total")
            # The last page: nothing came, `next` passes `total`, or (with no
            # total to go by) the page came short.
            if not profiles or next_start <= start:
                return
            if total is not None and next_start > int(total):
                return
            if total is None and len(profiles) < size:
                return
            start = next_start

    async def _search_with_contacts(
        self, facets: dict[str, list[str]], query: LeadSearch, limit: int
    ) -> AsyncGenerator[list[Person], None]:
        """Look candidates up, page after page, and stream those with the
        contacts asked for until `limit` of them or the candidates run out."""
        pages = self._profile_pages(facets, limit=None)
        backlog: deque[dict[str, Any]] = deque()
        running: set[asyncio.Task[Person | None]] = set()
        ready: list[Person] = []
        matched = looked_up = 0
        out_of_candidates = out_of_credits = False
        last_flush = time.monotonic()
        try:
            while True:
                # Never more lookups in flight than matches still missing, so
                # credits go only to people who can still make the list.
                while (
                    len(running) < self._max_concurrency
                    and matched + len(running) < limit
                    and not out_of_credits
                ):
                    if backlog:
                        if query.credits is not None and not await query.credits.take():
                            out_of_credits = True
                            break
                        looked_up += 1
                        lookup = self._enrich(backlog.popleft(), query.credits)
                        running.add(asyncio.create_task(lookup))
                    elif out_of_candidates:
                        break
                    else:
                        page = await anext(pages, None)
                        out_of_candidates = page is None
                        backlog.extend(page or ())
                if not running:
                    if out_of_credits and not looked_up:
                        raise RocketReachError("credits_exhausted", NO_CREDITS)
                    break
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                failures = [task.exception() for task in done]
                first_failure = next((exc for exc in failures if exc is not None), None)
                if first_failure is not None:
                    raise first_failure
                for task in done:
                    person = task.result()
                    if person is not None and _has_contacts(person, query):
                        ready.append(person)
                        matched += 1
                if matched >= limit:
                    break
                if ready and (
                    len(ready) >= self._stream_batch
                    or time.monotonic() - last_flush >= self._flush_s
                ):
                    yield ready
                    ready, last_flush = [], time.monotonic()
            # Stop what is left before the caller gets the last batch: it may
            # not come back for more.
            await _cancel(running)
            if ready:
                yield ready
        finally:
            await _cancel(running)
            await pages.aclose()

    async def _enrich(
        self, profile: dict[str, Any], credits: LookupCredits | None
    ) -> Person | None:
        """A search profile completed by a lookup; None if RocketReach no longer knows it."""
        found = await self._lookup_profile({"id": str(profile["id"])}, credits)
        if found is None:
            return None
        merged = {**profile, **{k: v for k, v in found.items() if v not in (None, "", [], {})}}
        return person_from_profile(merged)

    # -- lookup --------------------------------------------------------------

    async def _lookup_profile(
        self, params: dict[str, str], credits: LookupCredits | None = None
    ) -> dict[str, Any] | None:
        """A lookup, polled until it is finished or the polls run out; the
        credit taken for it from `credits` goes back if RocketReach did not
        answer it (404 or failure). One stopped in flight keeps it: it may
        have been billed."""
        try:
            answer = await self._request(
                "GET", self._lookup_path, params={**params, **self._reveal}
            )
        except RocketReachError:
            if credits is not None:
                credits.give_back()
            raise
        if answer is None:
            if credits is not None:
                credits.give_back()
            return None
        self.lookups_used += 1
        profile = _first_profile(answer)
        if profile is None:
            return None
        for polls in range(1, self._polling.attempts + 1):
            if profile.get("status") not in PENDING_STATUSES:
                return profile
            await asyncio.sleep(self._polling.delay(polls))
            statuses = await self._request(
                "GET", self._check_status_path, params={"ids": str(profile["id"])}
            )
            latest = _first_profile(statuses, profile["id"]) if statuses is not None else None
            if latest is not None:
                profile = {**profile, **latest}
        if profile.get("status") in PENDING_STATUSES:
            log.warning(
                "RocketReach lookup %s still %s after %d polls; using what it has",
                profile.get("id"),
                profile.get("status"),
                self._polling.attempts,
            )
        return profile

    # -- transport -----------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        """One API call under the rate limiter and the retry policy: the
        decoded JSON answer, or None for a 404."""
        url = self._base_url + path
        code: ErrorCode = "provider_unavailable"
        problem = ""
        for tries in range(1, self._retry.attempts + 1):
            await self._limiter.acquire()
            try:
                status, retry_after, answer = await self._send(method, url, params, body)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                # The details are for the log; users and the model get a plain reason.
                log.warning("RocketReach %s %s failed: %r", method, path, exc)
                code, problem = "provider_unavailable", "cannot reach RocketReach"
                wait = self._retry.delay(tries)
            else:
                if status < 300:
                    return answer
                if status == 404:
                    return None
                message = _error_message(answer, status)
                if status in (401, 403):
                    raise RocketReachError("invalid_api_key", message, status=status)
                if status == 429:
                    wait = retry_after if retry_after is not None else self._retry.delay(tries)
                    if wait > self._max_retry_after_s:
                        raise RocketReachError(
                            "rate_limited",
                            f"{message} (retry after {wait:.0f}s)",
                            status=status,
                            retry_after_s=wait,
                        )
                    # Everyone waits it out, not only this request.
                    self._limiter.hold(wait)
                    code, problem, wait = "rate_limited", message, 0.0
                elif status >= 500:
                    code, problem = "provider_unavailable", message
                    wait = self._retry.delay(tries)
                else:
                    raise RocketReachError("bad_request", message, status=status)
            if tries < self._retry.attempts:
                log.info("RocketReach %s %s: %s; try %d again", method, path, problem, tries + 1)
                await asyncio.sleep(wait)
        raise RocketReachError(code, f"{problem} (gave up after {self._retry.attempts} tries)")

    async def _send(
        self, method: str, url: str, params: Mapping[str, str] | None, body: dict[str, Any] | None
    ) -> tuple[int, float | None, Any]:
        """One HTTP exchange: status, `Retry-After` in seconds, decoded body."""
        headers = self._headers
        data = None
        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
            data = orjson.dumps(body)
        async with self._client().request(
            method, url, params=params, data=data, headers=headers, timeout=self._timeout
        ) as response:
            raw = await response.read()
            status = response.status
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if not raw:
            return status, retry_after, None
        try:
            return status, retry_after, orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if status < 300:
                raise RocketReachError(
                    "provider_unavailable", f"RocketReach answered {status} with non-JSON"
                ) from exc
            # Proxies answer errors in HTML: logged, not shown (the status says enough).
            log.warning("RocketReach answered %d: %r", status, raw[:200])
            return status, retry_after, None


# -- shapes ------------------------------------------------------------------


def search_facets(query: LeadSearch) -> dict[str, list[str]]:
    """Our search as RocketReach's `query` object. Seniority has no facet
    we could verify, so it is not sent."""
    facets: dict[str, list[str]] = {}
    for facet, value in (
        ("current_title", query.title),
        ("current_employer", query.company),
        ("geo", query.location),
        ("company_industry", query.industry),
    ):
        if value and value.strip():
            facets[facet] = [value.strip()]
    keywords = [k.strip() for k in query.keywords if k.strip()]
    if keywords:
        facets["keyword"] = keywords
    return facets


def person_from_profile(profile: Mapping[str, Any]) -> Person:
    """A RocketReach profile (search result or lookup) as our `Person`."""
    name = profile.get("name") or " ".join(
        part for part in (profile.get("first_name"), profile.get("last_name")) if part
    )
    location = profile.get("location") or ", ".join(
        part
        for part in (profile.get("city"), profile.get("region"), profile.get("country"))
        if part
    )
    links = profile.get("links")
    linkedin = profile.get("linkedin_url") or (
        links.get("linkedin") if isinstance(links, Mapping) else None
    )
    return Person(
        person_id=str(profile["id"]),
        source=SOURCE,
        name=name or "",
        title=profile.get("current_title") or "",
        company=profile.get("current_employer") or "",
        industry=profile.get("industry") or None,
        location=location or None,
        emails=usable_emails(profile.get("emails")),
        phones=usable_phones(profile.get("phones")),
        linkedin=linkedin or None,
    )


def usable_emails(items: Iterable[Any] | None) -> tuple[str, ...]:
    """Emails not marked invalid, professional ones first, then by grade."""
    kept: list[tuple[int, int, str]] = []
    for item in items or ():
        if not isinstance(item, Mapping):
            continue
        address = str(item.get("email") or "").strip()
        if "@" not in address or _marked_invalid(item.get("smtp_valid"), item.get("valid")):
            continue
        professional = 0 if item.get("type") == "professional" else 1
        grade = item.get("grade")
        rank = EMAIL_GRADES.index(grade) if grade in EMAIL_GRADES else len(EMAIL_GRADES)
        kept.append((professional, rank, address))
    kept.sort(key=lambda entry: entry[:2])
    return _unique(address for _, _, address in kept)


def usable_phones(items: Iterable[Any] | None) -> tuple[str, ...]:
    """Phone numbers not marked invalid, recommended ones first."""
    kept: list[tuple[int, str]] = []
    for item in items or ():
        if not isinstance(item, Mapping):
            continue
        number = str(item.get("number") or "").strip()
        if not number or _marked_invalid(item.get("validity"), item.get("valid")):
            continue
        kept.append((0 if item.get("recommended") else 1, number))
    kept.sort(key=lambda entry: entry[0])
    return _unique(number for _, number in kept)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` (seconds, or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _marked_invalid(*flags: Any) -> bool:
    return any(
        str(flag).strip().lower() in ("invalid", "false") for flag in flags if flag is not None
    )


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    out = []
    for value in values:
        if value.lower() not in seen:
            seen.add(value.lower())
            out.append(value)
    return tuple(out)


def _has_contacts(person: Person, query: LeadSearch) -> bool:
    return (not query.has_phone or bool(person.phones)) and (
        not query.has_email or bool(person.emails)
    )


def _search_answer(answer: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`profiles` and `pagination` of a search answer (a bare list is accepted too)."""
    if isinstance(answer, list):
        return [p for p in answer if isinstance(p, dict)], {}
    if not isinstance(answer, dict):
        raise RocketReachError("provider_unavailable", "RocketReach answered a search with no body")
    profiles = answer.get("profiles") or []
    pagination = answer.get("pagination") or {}
    return [p for p in profiles if isinstance(p, dict)], pagination


def _first_profile(answer: Any, profile_id: Any = None) -> dict[str, Any] | None:
    """The profile of a lookup or status answer (an object, or a list of them)."""
    candidates = answer if isinstance(answer, list) else [answer]
    for candidate in candidates:
        if (
            isinstance(candidate, dict)
            and "id" in candidate
            and (profile_id is None or str(candidate["id"]) == str(profile_id))
        ):
            return candidate
    return None


def _error_message(answer: Any, status: int) -> str:
    if isinstance(answer, dict):
        for key in ("detail", "message", "error"):
            if answer.get(key):
                return f"RocketReach answered {status}: {answer[key]}"
    return f"RocketReach answered {status}"


async def _cancel(tasks: set[asyncio.Task[Person | None]]) -> None:
    """Cancel lookups whose results are no longer wanted and wait for them to end."""
    for task in tasks:
        task.cancel()
    # Their outcomes are moot (cancelled on purpose); gathering them only
    # waits for the cancellation to land.
    await asyncio.gather(*tasks, return_exceptions=True)
    tasks.clear()
