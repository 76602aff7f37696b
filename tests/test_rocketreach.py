"""The RocketReach provider against a fake RocketReach over real sockets."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fakes.rocketreach_server import API_KEY, FIRST_ID, FakeRocketReach

from leadstream.agent.providers.base import LeadSearch
from leadstream.agent.providers.rocketreach import (
    Backoff,
    RocketReachError,
    RocketReachProvider,
    usable_emails,
)
from leadstream.store.records import Person

# Small delays keep the retry and polling tests fast.
FAST_RETRY = Backoff(attempts=3, base_delay_s=0.01, max_delay_s=0.05)
FAST_POLLING = Backoff(attempts=4, base_delay_s=0.01, max_delay_s=0.05)

MakeProvider = Callable[..., RocketReachProvider]


@pytest.fixture
def fake(fake_rocketreach: FakeRocketReach) -> FakeRocketReach:
    return fake_rocketreach


@pytest.fixture
async def make_provider(fake: FakeRocketReach) -> AsyncIterator[MakeProvider]:
    """Providers pointed at the fake (fast unless told otherwise), closed after the test."""
    providers: list[RocketReachProvider] = []

    def make(api_key: str = API_KEY, **options: Any) -> RocketReachProvider:
        settings: dict[str, Any] = {
            "base_url": fake.base_url,
            "requests_per_s": 1000,
            "retry": FAST_RETRY,
            "polling": FAST_POLLING,
        }
        provider = RocketReachProvider(api_key, **(settings | options))
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        await provider.close()


async def collect(
    provider: RocketReachProvider, query: LeadSearch, limit: int
) -> list[list[Person]]:
    return [page async for page in provider.search(query, limit=limit)]


def flat(pages: list[list[Person]]) -> list[Person]:
    return [person for page in pages for person in page]


# -- search --------------------------------------------------------------------


async def test_search_pages_until_the_limit(
    fake: FakeRocketReach, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    pages = await collect(provider, LeadSearch(), limit=150)

    assert [len(page) for page in pages] == [100, 50]
    people = flat(pages)
    assert len({person.person_id for person in people}) == 150
    assert [(b["start"], b["page_size"]) for b in fake.search_bodies] == [(1, 100), (101, 50)]
    # Search results carry no contacts, and cost no lookups.
    assert fake.requests["lookup"] == 0
    assert provider.lookups_used == 0
    first = fake.person(0)
    assert people[0] == Person(
        person_id=str(first["id"]),
        source="rocketreach",
        name=first["name"],
        title=first["current_title"],
        company=first["current_employer"],
        location=first["location"],
        linkedin=first["linkedin_url"],
    )


async def test_search_sends_our_filters_as_rocketreach_facets(
    fake: FakeRocketReach, make_provider: MakeProvider
) -> None:
    query = LeadSearch(
        title="CTO", industry="fintech", location="United States", keywords=("Ledgerly",)
    )
    pages = await collect(make_provider(), query, limit=100)

    facets = {
        "current_title": ["CTO"],
        "geo": ["United States"],
        "company_industry": ["fintech"],
        "keyword": ["Ledgerly"],
    }
    assert fake.search_bodies == [{"query": facets, "start": 1, "page_size": 100}]
    expected = [str(person["id"]) for person in fake.search_results(facets)]
    assert 0 < len(expected) < 100
    assert [person.person_id for person in flat(pages)] == expected


async def test_search_path_of_the_official_client(
    fake: FakeRocketReach, make_provider: MakeProvider
) -> None:
    pages = await collect(make_provider(search_path="/search"), LeadSearch(), limit=10)
    assert len(flat(pages)) == 10
    assert fake.requests["search"] == 1


async def test_with_phone_numbers_only_people_with_phones_streamed(
    fake: FakeRocketReach, make_provider: MakeProvider
) -> None:
    provider = make_provider(max_concurrency=4, stream_batch=5)
    query = LeadSearch(industry="fintech", has_phone=True)
    pages = await collect(provider, query, limit=25)

    people = flat(pages)
    assert len(people) == 25
    known = {str(person["id"]): person for person in fake.people}
    for person in people:
        assert person.phones == (known[person.person_id]["phones"][0]["number"],)
    # Streamed as lookups complete, not all at the end.
    assert len(pages) >= 2
    # Some of them needed polling.
    assert fake.requests["checkStatus"] > 0
    # Credits: no more lookups than needed to find 25, plus those in flight.
    candidates = fake.search_results({"company_industry": ["fintech"]})
    with_phones = [i for i, person in enumerate(candidates) if person["phones"]]
    needed = with_phones[24] + 1
    assert needed <= provider.lookups_used <= needed + 3
    assert provider.lookups_used == fake.lookups_answered
    # The first search page held enough of them.
    assert fake.requests["search"] == 1


async def test_stopping_a_contact_search_cancels_its_lookups(
    fake: FakeRocketReach, make_provider: MakeProvider
) -> None:
    provider = make_provider(stream_batch=1)
    fake.lookup_delay_s = 0.1
    search = provider.search(LeadSearch(has_email=True), limit=100)
    assert await anext(search)
    fake.lookup_delay_s = 5.0
    started = time.monotonic()
    used = provider.lookups_used
    await search.aclose()  # type: ignore[attr-defined]

    # The lookups in flight were cancelled, not waited for, and none followed.
    assert time.monotonic() - started < 1.0
    await asyncio.sleep(0.2)
    assert provider.lookups_used == used < 100


async def test_contact_search_ends_when_candidates_run_out(
    fake: FakeRocketReach, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    query = LeadSearch(company="Securon", location="Berlin", has_phone=True)
    pages = await collect(provider, query, limit=100)

    candidates = fake.search_results({"current_employer": ["Securon"], "geo": ["Berlin"]})
    expected = {str(person["id"]) for person in candidates if person["phones"]}
    assert {person.person_id for person in flat(pages)} == expected
    assert provider.lookups_used == len(candidates)


async def test_with_email_drops_people_without_a_usable_email(
    fake: FakeRocketReach, make_provider: MakeProvider
) -> None:
    pages = await collect(make_provider(), LeadSearch(has_email=True), limit=40)
    people = flat(pages)
    assert len(people) == 40
    assert all(person.emails for person in people)
    # Person 4's only professional email is marked invalid: not a match.
    assert str(FIRST_ID + 4) not in {person.person_id for person in people}


async def test_lookups_stay_under_the_rate_limit() -> None:
    limit_per_s = 10
    # The fake throttles a client that goes faster (a one-second burst at most).
    server = FakeRocketReach(rate_limit_per_s=limit_per_s)
    await server.start()
    provider = RocketReachProvider(
        API_KEY,
        base_url=server.base_url,
        requests_per_s=limit_per_s,
        max_concurrency=8,
        polling=FAST_POLLING,
        retry=FAST_RETRY,
    )
    try:
        pages = await collect(provider, LeadSearch(has_email=True), limit=12)
    finally:
        await provider.close()
        await server.stop()

    assert len(flat(pages)) == 12
    times = [arrival.at for arrival in server.arrivals]
    assert len(times) >= 13
    assert server.throttled == 0
    assert (len(times) - 1) / (times[-1] - times[0]) <= limit_per_s * 1.05
    busiest_second = max(sum(1 for t in times if start <= t < start + 1) for start in times)
    assert busiest_second <= limit_per_s


# -- failures ------------------------------------------------------------------


async def test_429_with_retry_after_is_waited_out(
    fake: FakeRocketReach, make_provider: MakeProvider
) -> None:
    fake.fail_next(429, retry_after=1)
    started = time.monotonic()
    pages = await collect(make_provider(), LeadSearch(title="CTO"), limit=5)

    assert len(flat(pages)) == 5
    assert time.monotonic() - started >= 0.95
    assert fake.requests["search"] == 2


async def test_429_on_concurrent_lookups_is_waited_out(
    fake: FakeRocketReach, make_provider: MakeProvider
) -> None:
    fake.fail_next(429, 2, retry_after=1, endpoint="lookup")
    started = time.monotonic()
    pages = await collect(make_provider(), LeadSearch(has_phone=True), limit=6)

    assert len(flat(pages)) == 6
    assert all(person.phones for person in flat(pages))
    assert time.monotonic() - started >= 1.95
    # A 429 pauses every lookup: besides requests already in flight when it
    # came back (at most the concurrency), nothing goes out during the pause.
    lookups = [arrival.at for arrival in fake.arrivals if arrival.endpoint == "lookup"]
    in_first_pause = [t for t in lookups if t - lookups[0] < 0.9]
    assert len(in_first_pause) <= 8, "the first 429 did not pause the other lookups"
    assert len(lookups) > len(in_first_pause)


async def test_retry_after_longer_than_allowed_is_rate_limited(
    fake: FakeRocketReach, make_provider: MakeProvider
) -> None:
    fake.fail_next(429, retry_after=3600)
    with pytest.raises(RocketReachError) as caught:
        await collect(make_provider(max_retry_after_s=5), LeadSearch(), limit=5)
    assert caught.value.code == "rate_limited"
    # What RocketReach asked for travels with the error (a job can defer by it).
    assert caught.value.retry_after_s == 3600
    assert fake.requests["search"] == 1


async def test_500_then_success(fake: FakeRocketReach, make_provider: MakeProvider) -> None:
    fake.fail_next(500)
    pages = await collect(make_provider(), LeadSearch(), limit=20)
    assert len(flat(pages)) == 20
    assert fake.requests["search"] == 2


async def test_5xx_past_the_retries_is_provider_unavailable(
    fake: FakeRocketReach, make_provider: MakeProvider
) -> None:
    fake.fail_next(503, 10)
    with pytest.raises(RocketReachError) as caught:
        await collect(make_provider(), LeadSearch(), limit=20)
    assert caught.value.code == "provider_unavailable"
    assert fake.requests["search"] == FAST_RETRY.attempts


async def test_connection_refused_is_provider_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = RocketReachProvider(
        API_KEY, base_url=f"http://127.0.0.1:{port}/api/v2", retry=FAST_RETRY
    )
    try:
        with pytest.raises(RocketReachError) as caught:
            await provider.lookup(person_id="10001")
    finally:
        await provider.close()
    assert caught.value.code == "provider_unavailable"


async def test_invalid_key(fake: FakeRocketReach, make_provider: MakeProvider) -> None:
    provider = make_provider(api_key="not-the-key")
    with pytest.raises(RocketReachError) as caught:
        await collect(provider, LeadSearch(), limit=10)
    assert caught.value.code == "invalid_api_key"
    assert caught.value.status == 401
    assert "Invalid API Key" in caught.value.message
    with pytest.raises(RocketReachError) as caught:
        await provider.lookup(person_id=str(FIRST_ID))
    assert caught.value.code == "invalid_api_key"
    # Not retried.
    assert fake.requests == {"search": 1, "lookup": 1}


# -- lookup --------------------------------------------------------------------


async def test_lookup_by_name_and_company(
    fake: FakeRocketReach, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    wanted = fake.person(7)
    found = await provider.lookup(name=wanted["name"], company=wanted["current_employer"])

    assert found is not None
    assert found.person_id == str(wanted["id"])
    assert found.title == wanted["current_title"]
    assert found.industry == wanted["industry"]
    assert found.emails == (wanted["emails"][0]["email"],)
    assert found.phones == (wanted["phones"][0]["number"],)
    by_linkedin = await provider.lookup(linkedin=wanted["linkedin_url"])
    assert by_linkedin == found
    assert provider.lookups_used == 2
    assert fake.requests["checkStatus"] == 0


async def test_lookup_that_needs_polling(
    fake: FakeRocketReach, make_provider: MakeProvider
) -> None:
    wanted = fake.person(5)
    assert fake.polls_needed(wanted["id"]) == 2
    found = await make_provider().lookup(person_id=str(wanted["id"]))

    assert found is not None
    assert found.name == wanted["name"]
    assert found.emails and found.phones
    assert fake.requests["checkStatus"] == 2


async def test_lookup_of_an_unknown_person_is_none(make_provider: MakeProvider) -> None:
    provider = make_provider()
    assert await provider.lookup(name="Nobody Atall", company="Nowhere") is None
    assert provider.lookups_used == 0


async def test_phones_only_when_asked_to_reveal_them(
    fake: FakeRocketReach, make_provider: MakeProvider
) -> None:
    provider = make_provider(reveal_phones=False)
    found = await provider.lookup(person_id=str(fake.person(7)["id"]))
    assert found is not None
    assert found.emails and found.phones == ()
    with pytest.raises(RocketReachError) as caught:
        await collect(provider, LeadSearch(has_phone=True), limit=5)
    assert caught.value.code == "bad_request"


def test_usable_emails_drop_invalid_and_put_professional_first() -> None:
    emails = usable_emails(
        [
            {"email": "me@gmail.com", "type": "personal", "smtp_valid": "valid", "grade": "A"},
            {"email": "old@acme.com", "type": "professional", "smtp_valid": "invalid"},
            {"email": "j@acme.com", "type": "professional", "valid": "true", "grade": "A-"},
            {"email": "jane@acme.com", "type": "professional", "smtp_valid": "valid", "grade": "A"},
            {"email": "Jane@acme.com", "type": "professional", "grade": "A"},
        ]
    )
    assert emails == ("jane@acme.com", "j@acme.com", "me@gmail.com")
