"""The offline planner's parsing, on a table of phrasings."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import orjson
import pytest

from leadstream.agent import planner
from leadstream.agent.model import ToolCall
from leadstream.agent.planner import HELP, OfflinePlanner, plan_request

SEARCHES = [
    (
        "Find 100 CTOs in fintech with phone numbers",
        {"title": "CTOs", "industry": "fintech", "hasPhone": True, "limit": 100},
    ),
    ("get 20 VP Sales at Novapay", {"title": "VP Sales", "company": "Novapay", "limit": 20}),
    (
        "show me 50 heads of marketing in SaaS in Berlin with emails",
        {
            "title": "heads of marketing",
            "industry": "saas",
            "location": "Berlin",
            "hasEmail": True,
            "limit": 50,
        },
    ),
    (
        "Please find ten CFOs in healthcare companies in the UK with phones and emails",
        {
            "title": "CFOs",
            "industry": "healthcare",
            "location": "the UK",
            "hasPhone": True,
            "hasEmail": True,
            "limit": 10,
        },
    ),
    ("find a hundred CTOs", {"title": "CTOs", "limit": 100}),
    (
        "find me a CTO at Stripe in London",
        {"title": "CTO", "company": "Stripe", "location": "London"},
    ),
    ("search for 30 people in Germany", {"location": "Germany", "limit": 30}),
    (
        "list 25 data scientists in biotech startups",
        {"title": "data scientists", "industry": "biotech", "limit": 25},
    ),
    (
        "Get 40 software engineers in payments",
        {"title": "software engineers", "industry": "fintech", "limit": 40},
    ),
]


@pytest.mark.parametrize(("text", "args"), SEARCHES)
def test_searches(text, args):
    plan = plan_request(text, last_search_id=None, search_max=200)
    assert plan.steps == [("search_leads", args)]


def test_limit_above_the_maximum_is_capped_and_said():
    plan = plan_request("find 500 engineers", last_search_id=None, search_max=200)
    assert plan.steps == [("search_leads", {"title": "engineers", "limit": 200})]
    assert "at most 200" in plan.note


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("save them", [("save_leads", {"searchId": "sr_1"})]),
        ("Save all", [("save_leads", {"searchId": "sr_1"})]),
        (
            "save the ones with phones",
            [("save_leads", {"searchId": "sr_1", "filter": {"hasPhone": True}})],
        ),
        (
            "save those with emails",
            [("save_leads", {"searchId": "sr_1", "filter": {"hasEmail": True}})],
        ),
        ("export them to csv", [("export_leads", {"searchId": "sr_1"})]),
        ("Export to CSV", [("export_leads", {"searchId": "sr_1"})]),
        ("export my saved leads with phones", [("export_leads", {"filter": {"hasPhone": True}})]),
        (
            "look up Jane Smith at Cloudly",
            [("lookup_profile", {"name": "Jane Smith", "company": "Cloudly"})],
        ),
        ("lookup John Doe", [("lookup_profile", {"name": "John Doe"})]),
    ],
)
def test_save_export_lookup(text, steps):
    assert plan_request(text, last_search_id="sr_1", search_max=200).steps == steps


@pytest.mark.parametrize(
    ("text", "search"),
    [
        ("find 20 CTOs in fintech, and save them", {"industry": "fintech"}),
        ("find 20 CTOs in fintech and then save them", {"industry": "fintech"}),
        ("find 20 CTOs in fintech , then save them", {"industry": "fintech"}),
        ("find 20 CTOs at Acme,save them", {"company": "Acme"}),
    ],
)
def test_follow_ups_after_any_run_of_separators(text, search):
    plan = plan_request(text, last_search_id=None, search_max=200)
    assert plan.steps == [
        ("search_leads", {"title": "CTOs", "limit": 20, **search}),
        ("save_leads", {}),
    ]


def test_with_clause_is_the_last_one_after_the_last_comma():
    plan = plan_request(
        "find CTOs with a beard, in fintech with phones with emails",
        last_search_id=None,
        search_max=200,
    )
    assert plan.steps == [
        (
            "search_leads",
            {
                "title": "CTOs with a beard,",
                "industry": "fintech",
                "hasPhone": True,
                "hasEmail": True,
            },
        )
    ]


def test_lookup_company_is_after_the_first_at():
    plan = plan_request("who is the CEO of Acme at Berlin?", last_search_id=None, search_max=200)
    assert plan.steps == [("lookup_profile", {"name": "the CEO", "company": "Acme at Berlin"})]


def test_follow_ups_in_one_message():
    plan = plan_request(
        "find 20 CTOs in fintech and save them and export to csv",
        last_search_id=None,
        search_max=200,
    )
    assert [name for name, _ in plan.steps] == ["search_leads", "save_leads", "export_leads"]


def test_export_without_a_search_exports_saved_leads():
    assert plan_request("export to csv", last_search_id=None, search_max=200).steps == [
        ("export_leads", {})
    ]


@pytest.mark.parametrize(
    "text",
    [
        "what's the weather?",
        "write me a poem",
        "hello",
        "",
        "   ",
        "🙂",
        "tell me a joke",
        "x" * 16000,
    ],
)
def test_declines_politely_with_help(text):
    plan = plan_request(text, last_search_id="sr_1", search_max=200)
    assert plan.steps == [] and plan.text == HELP
    assert "OPENAI_API_KEY" in plan.text


def test_asks_for_who_when_a_search_names_nobody():
    plan = plan_request("find 100", last_search_id=None, search_max=200)
    assert plan.steps == [] and "job title" in plan.text


def test_save_without_a_search_says_so():
    plan = plan_request("save them", last_search_id=None, search_max=200)
    assert plan.steps == [] and "nothing to save" in plan.text


# Texts that make a backtracking pattern rescan a run from each of its
# characters (the prefixes get the anchored patterns past their first words).
ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "commas": lambda n: "find ctos " + "," * n + "x",
    "spaces": lambda n: "find ctos " + " " * n + "x",
    "tabs and spaces": lambda n: "find" + " \t" * (n // 2) + "x",
    "and": lambda n: "find ctos " + "and " * (n // 4) + "x",
    "commas and": lambda n: "find ctos " + ",and" * (n // 4) + "x",
    "separators": lambda n: "find ctos " + ", and then " * (n // 11) + "x",
    "at": lambda n: "look up x " + "at " * (n // 3) + "?",
    "question marks": lambda n: "look up x " + "?" * n + "z",
    "digits": lambda n: "find " + "1," * (n // 2) + "x",
    "letters": lambda n: "a" * n,
    "with": lambda n: "find ctos " + "with " * (n // 5) + ",",
    "please": lambda n: "please " * (n // 7) + "x",
    "prepositions": lambda n: "find ctos" + " in at" * (n // 6) + " x",
}
PATTERNS = {name: value for name, value in vars(planner).items() if isinstance(value, re.Pattern)}


def _seconds(run: Callable[[], object]) -> float:
    """The fastest of repeated runs, repeated for at least 5 ms (noise fades in the minimum)."""
    best = float("inf")
    spent = 0.0
    runs = 0
    while runs < 3 or spent < 0.005:
        started = time.perf_counter()
        run()
        took = time.perf_counter() - started
        best = min(best, took)
        spent += took
        runs += 1
    return best


def _grows_linearly(run: Callable[[str], object], make: Callable[[int], str]) -> float:
    """time(4n) / time(n): about 4 when linear, about 16 when quadratic."""
    small, large = make(1000), make(4000)
    return _seconds(lambda: run(large)) / max(_seconds(lambda: run(small)), 1e-7)


def test_the_patterns_under_test_are_all_of_the_planners():
    assert {"SEARCH", "LOOKUP", "SAVE", "FOLLOW_UPS", "WITH_CLAUSE", "PREPOSITIONS"} <= set(
        PATTERNS
    )


@pytest.mark.parametrize("pattern", PATTERNS)
def test_each_pattern_is_linear_in_its_input(pattern):
    regex = PATTERNS[pattern]
    for kind, make in ADVERSARIAL.items():
        ratio = _grows_linearly(lambda text: (regex.search(text), regex.split(text)), make)
        assert ratio < 8, f"{pattern} on {kind}: 4x the text took {ratio:.1f}x the time"
        regex.split(make(16_000))  # and the longest chat message finishes


@pytest.mark.parametrize("kind", ADVERSARIAL)
def test_planning_is_linear_in_the_message(kind):
    def plan(text: str) -> object:
        return plan_request(text, last_search_id="sr_1", search_max=200)

    ratio = _grows_linearly(plan, ADVERSARIAL[kind])
    assert ratio < 8, f"planning {kind}: 4x the text took {ratio:.1f}x the time"


async def _first_call(model: OfflinePlanner, text: str) -> ToolCall:
    async for event in model.stream([{"role": "user", "content": text}], []):
        if isinstance(event, ToolCall):
            return event
    raise AssertionError(f"no tool call for {text!r}")


async def test_the_planner_reads_only_the_start_of_a_long_message():
    text = "find 5 CTOs" + " " * 3000 + "in fintech"
    capped = await _first_call(OfflinePlanner(max_chars=2000), text)
    assert orjson.loads(capped.arguments) == {"title": "CTOs", "limit": 5}
    whole = await _first_call(OfflinePlanner(max_chars=4000), text)
    assert orjson.loads(whole.arguments) == {"title": "CTOs", "industry": "fintech", "limit": 5}
