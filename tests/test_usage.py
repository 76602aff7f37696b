"""`GET /api/usage`: what an org used per UTC day. Real replies run through
the real SDK against the fake OpenAI server (so tokens and cost are counted)
or through the offline planner, searches look people up on the fake
RocketReach API (so credits are spent); the app runs on a real port with a
real SQLite file, and the usage is read back over HTTP."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from fakes.openai_server import FakeToolCall, TextReply, ToolCallReply
from fakes.rocketreach_server import API_KEY
from support import bearer, settings_with

MODEL = "gpt-4o-mini"


@pytest.fixture
def llm_settings(settings, fake_openai, fake_rocketreach):
    """The fake model, and RocketReach as the lead provider."""
    return settings_with(
        settings,
        openai_api_key="sk-test",
        openai_base_url=fake_openai.base_url,
        model=MODEL,
        rocketreach_api_key=API_KEY,
        rocketreach_base_url=fake_rocketreach.base_url,
    )


def around_today() -> dict[str, str]:
    """A range that holds today's UTC day even if the test crosses midnight."""
    today = datetime.now(UTC).date()
    return {"from": (today - timedelta(days=1)).isoformat(), "to": str(today + timedelta(days=1))}


async def get_usage(http, server, token: str, **query: str):
    response = await http.get(server.make_url("/api/usage"), params=query, headers=bearer(token))
    return response.status, await response.json()


async def test_replies_tokens_cost_and_credits_add_up_per_org(
    llm_settings, fake_openai, fake_rocketreach, start_server, connect, token, http
):
    server = await start_server(llm_settings)
    fake_openai.script(
        ToolCallReply(
            [FakeToolCall("search_leads", {"title": "CTO", "hasPhone": True, "limit": 5})]
        ),
        TextReply("Five CTOs with phone numbers."),
        TextReply("Hello again."),
        TextReply("Hi Bob."),
        TextReply("Hi from Globex."),
    )
    alice = await connect(server, token("acme", "alice"))
    first = await alice.chat("5 CTOs with phone numbers")
    second = await alice.chat("thanks", first["ack"]["conversationId"])
    bob = await connect(server, token("acme", "bob"))
    third = await bob.chat("hello")
    globex = await connect(server, token("globex", "gail"))
    other = await globex.chat("hello")
    assert fake_openai.pending == 0
    lookups = fake_rocketreach.lookups_answered
    assert lookups > 0, "the search spent lookup credits"

    status, acme = await get_usage(http, server, token("acme", "bob"), **around_today())
    assert status == 200
    replies = [first, second, third]
    assert acme["totals"] == {
        "replies": 3,
        "promptTokens": sum(r["usage"]["promptTokens"] for r in replies),
        "completionTokens": sum(r["usage"]["completionTokens"] for r in replies),
        "costUsd": pytest.approx(sum(r["usage"]["costUsd"] for r in replies), abs=1e-6),
        "credits": lookups,
    }
    assert acme["totals"]["promptTokens"] > 0 and acme["totals"]["completionTokens"] > 0
    assert acme["totals"]["costUsd"] > 0
    used = [d for d in acme["days"] if d["replies"]]
    assert len(used) == 1 and {**used[0], "date": None} == {**acme["totals"], "date": None}

    status, theirs = await get_usage(http, server, token("globex", "gail"), **around_today())
    assert theirs["totals"]["replies"] == 1 and theirs["totals"]["credits"] == 0
    assert theirs["totals"]["promptTokens"] == other["usage"]["promptTokens"]
    # What the fake model billed is what the orgs were charged, nothing lost or doubled.
    billed = acme["totals"]["promptTokens"] + theirs["totals"]["promptTokens"]
    assert billed == fake_openai.prompt_tokens


async def test_every_day_is_listed_with_zeros_and_the_default_is_30_days(
    server, connect, token, http
):
    client = await connect(server, token("acme", "alice"))
    await client.chat("find 5 CTOs in fintech")  # the offline planner: a reply, no tokens
    status, body = await get_usage(http, server, token("acme", "alice"))
    assert status == 200
    first, last = date.fromisoformat(body["from"]), date.fromisoformat(body["to"])
    assert (last - first).days == 29 and len(body["days"]) == 30
    assert [d["date"] for d in body["days"]] == [
        (first + timedelta(days=i)).isoformat() for i in range(30)
    ]
    assert body["totals"] == {
        "replies": 1,
        "promptTokens": 0,
        "completionTokens": 0,
        "costUsd": 0,
        "credits": 0,
    }
    zero = {"replies": 0, "promptTokens": 0, "completionTokens": 0, "costUsd": 0, "credits": 0}
    assert [d for d in body["days"][:-2] if {**d, "date": None} != {**zero, "date": None}] == []

    # A range across a month end, into the future, each day once.
    status, body = await get_usage(
        http, server, token(), **{"from": "2026-01-30", "to": "2026-02-02"}
    )
    assert status == 200
    assert [d["date"] for d in body["days"]] == [
        "2026-01-30",
        "2026-01-31",
        "2026-02-01",
        "2026-02-02",
    ]
    assert body["totals"]["replies"] == 0
    status, body = await get_usage(
        http, server, token(), **{"from": "2026-03-04", "to": "2026-03-04"}
    )
    assert [d["date"] for d in body["days"]] == ["2026-03-04"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"from": "2026-2-01"}, "invalid_date"),
        ({"from": "20261128"}, "invalid_date"),
        ({"to": "2026-02-30"}, "invalid_date"),
        ({"to": "yesterday"}, "invalid_date"),
        ({"from": "2026-11-28T00:00"}, "invalid_date"),
        ({"from": "0000-01-01"}, "invalid_date"),
        ({"from": "２０２６-01-01"}, "invalid_date"),  # fullwidth digits
        ({"from": "2026-12-02", "to": "2026-12-01"}, "invalid_range"),
        ({"from": "2025-01-01", "to": "2026-01-02"}, "range_too_long"),  # 367 days
        ({"from": "0001-01-01", "to": "9999-12-31"}, "range_too_long"),
    ],
)
async def test_bad_ranges_get_a_clear_400(server, token, http, query, code):
    status, body = await get_usage(http, server, token(), **query)
    assert status == 400
    assert body["error"]["code"] == code
    if code == "range_too_long":
        assert body["error"]["details"] == {"maxDays": 366}
        assert "at most 366" in body["error"]["message"]


async def test_range_limits_and_edges(settings, start_server, token, http):
    server = await start_server(settings_with(settings, usage_max_days=7))
    status, body = await get_usage(
        http, server, token(), **{"from": "2026-01-01", "to": "2026-01-07"}
    )
    assert status == 200 and len(body["days"]) == 7
    status, body = await get_usage(
        http, server, token(), **{"from": "2026-01-01", "to": "2026-01-08"}
    )
    assert status == 400 and body["error"]["details"] == {"maxDays": 7}
    # Without `from`, the 30 days ending at `to`: over this server's 7-day bound.
    status, body = await get_usage(http, server, token(), to="2026-01-08")
    assert status == 400 and body["error"]["code"] == "range_too_long"
    # Near the calendar's start, the default `from` stops at its first day.
    status, body = await get_usage(http, server, token(), to="0001-01-03")
    assert status == 200
    assert [d["date"] for d in body["days"]] == ["0001-01-01", "0001-01-02", "0001-01-03"]


async def test_a_year_is_allowed_and_a_token_is_required(server, token, http):
    status, body = await get_usage(
        http, server, token(), **{"from": "2024-01-01", "to": "2024-12-31"}
    )
    assert status == 200 and len(body["days"]) == 366  # a leap year
    response = await http.get(server.make_url("/api/usage"))
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "unauthorized"
