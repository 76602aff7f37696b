"""The offline planner's parsing, on a table of phrasings."""

from __future__ import annotations

import pytest

from leadstream.agent.planner import HELP, plan_request

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
