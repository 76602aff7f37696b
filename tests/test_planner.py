"""The offline planner's parsing, on a table of phrasings."""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Callable

import orjson
import pytest

from leadstream.agent import planner, request_parser
from leadstream.agent.model import ToolCall
from leadstream.agent.planner import (
    HELP,
    EarlierSearch,
    OfflinePlanner,
    next_call,
    plan_request,
    report,
)


def test_limit_above_the_maximum_is_capped_and_said():
    result = plan_request("find 500 engineers", last_search_id=None, search_max=200)
    assert result.steps == [("search_leads", {"title": "engineers", "limit": 200})]
    assert "at most 200" in result.note


def test_follow_ups_in_one_message():
    result = plan_request("find 20 CTOs in fintech and save them and export to csv", search_max=200)
    assert [name for name, _ in result.steps] == ["search_leads", "save_leads", "export_leads"]


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
    result = plan_request(text, last_search_id="sr_1", search_max=200)
    assert result.steps == [] and result.text == HELP
    assert "OPENAI_API_KEY" in result.text


def test_says_what_it_understood_when_a_search_names_nobody():
    result = plan_request("100 in Berlin with emails please", search_max=200)
    assert result.steps == []
    assert "I understood 100 leads in Berlin with emails, but not who to look for" in result.text


def test_save_without_a_search_says_so():
    result = plan_request("save them", last_search_id=None, search_max=200)
    assert result.steps == [] and "nothing to save" in result.text


EARLIER = EarlierSearch({"title": "CTOs", "industry": "fintech", "limit": 100}, "sr_1", 100)


def test_more_is_the_same_search_with_a_larger_limit_up_to_the_maximum():
    result = plan_request("more", last_search=EARLIER, search_max=150)
    assert result.steps == [("search_leads", {**EARLIER.args, "limit": 150})]
    assert "50 more" in result.note
    at_max = EarlierSearch({**EARLIER.args, "limit": 150}, "sr_2", 150)
    result = plan_request("more", last_search=at_max, search_max=150)
    assert result.steps == [] and "the most one search can" in result.text


def test_more_after_a_search_that_found_everything_says_there_is_no_more():
    exhausted = EarlierSearch(EARLIER.args, "sr_1", 37)
    result = plan_request("more please", last_search=exhausted, search_max=200)
    assert result.steps == [] and "already found every match: 37 CTOs in fintech" in result.text


def test_a_new_search_does_not_inherit_the_last_one():
    result = plan_request("find 10 people at Stripe", last_search=EARLIER, search_max=200)
    assert result.steps == [("search_leads", {"company": "Stripe", "limit": 10})]


def test_words_not_understood_become_keywords_and_are_said():
    result = plan_request("CTOs with a beard in fintech", search_max=200)
    assert result.steps == [
        ("search_leads", {"title": "CTOs", "industry": "fintech", "keywords": "beard"})
    ]
    assert '"beard"' in result.notes[0]


def test_a_second_industry_is_left_out_with_a_suggestion():
    result = plan_request("CTOs in fintech and insurance", search_max=200)
    assert result.steps == [("search_leads", {"title": "CTOs", "industry": "fintech"})]
    assert 'say "same for insurance"' in result.notes[0]


def _found(n: int, search_id: str = "sr_9") -> dict[str, object]:
    return {"searchId": search_id, "found": n, "withPhone": 0, "withEmail": 0, "sample": []}


def test_a_search_that_finds_nothing_is_tried_once_without_its_narrowest_requirement():
    result = plan_request("CFOs in legal in Tokyo", search_max=200)
    first = result.steps[0][1]
    assert first == {"title": "CFOs", "industry": "legal", "location": "Tokyo"}
    done = [("search_leads", first, _found(0))]
    broader = next_call(result, done)
    assert broader == ("search_leads", {"title": "CFOs", "industry": "legal"})
    done.append(("search_leads", broader[1], _found(34)))
    assert next_call(result, done) is None
    text = report(result, done)
    assert text.startswith("I found no CFOs in legal in Tokyo.")
    assert "Without Tokyo there are 34: CFOs in legal" in text


def test_the_broader_search_says_at_least_when_it_hit_its_limit():
    result = plan_request("20 CFOs in legal in Tokyo", search_max=200)
    done = [("search_leads", result.steps[0][1], _found(0))]
    done.append(("search_leads", next_call(result, done)[1], _found(20)))  # type: ignore[index]
    assert "Without Tokyo there are at least 20" in report(result, done)


def test_follow_ups_do_not_run_on_a_search_that_found_nothing():
    result = plan_request("find 100 CTOs at Nowhere and save them", search_max=200)
    done = [("search_leads", result.steps[0][1], _found(0))]
    assert next_call(result, done) == ("search_leads", {"title": "CTOs", "limit": 100})
    done.append(("search_leads", {"title": "CTOs", "limit": 100}, _found(100)))
    assert next_call(result, done) is None  # no save: the user asked for the ones at Nowhere
    assert "Without Nowhere there are at least 100: CTOs." in report(result, done)


def test_with_nothing_left_to_drop_the_answer_suggests_broadening():
    result = plan_request("find leads at Nowhere", search_max=200)
    assert result.broader is None
    done = [("search_leads", result.steps[0][1], _found(0))]
    assert next_call(result, done) is None
    assert "I found no leads at Nowhere. Try a broader title" in report(result, done)


def test_follow_ups_act_on_this_turns_search():
    result = plan_request("find 5 CFOs and save them and export to csv", search_max=200)
    done = [("search_leads", result.steps[0][1], _found(5, "sr_new"))]
    assert next_call(result, done) == ("save_leads", {"searchId": "sr_new"})
    done.append(("save_leads", {"searchId": "sr_new"}, {"saved": 5}))
    assert next_call(result, done) == ("export_leads", {"searchId": "sr_new"})


def test_a_tool_error_ends_the_plan_and_is_said():
    result = plan_request("find 5 CFOs and save them", search_max=200)
    error = {"error": {"code": "credits_exhausted", "message": "no credits left"}}
    done = [("search_leads", result.steps[0][1], error)]
    assert next_call(result, done) is None
    assert "I couldn't run search_leads: no credits left." in report(result, done)


async def _replies(model: OfflinePlanner, messages: list[dict]) -> list[object]:
    return [event async for event in model.stream(messages, [])]


async def test_a_follow_up_refines_the_search_found_in_the_conversation():
    """The planner reads the last search's arguments from the tool calls of the history."""
    args = {"title": "CTOs", "industry": "fintech", "limit": 50}
    history = [
        {"role": "user", "content": "50 CTOs in fintech"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "search_leads", "arguments": orjson.dumps(args).decode()},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "c1",
            "content": orjson.dumps(_found(50, "sr_1")).decode(),
        },
        {"role": "assistant", "content": "I found 50 leads"},
        {"role": "user", "content": "only the ones in London, with emails"},
    ]
    events = await _replies(OfflinePlanner(), history)
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [orjson.loads(c.arguments) for c in calls] == [
        {**args, "location": "London", "hasEmail": True}
    ]
    history[-1] = {"role": "user", "content": "save them"}
    calls = [e for e in await _replies(OfflinePlanner(), history) if isinstance(e, ToolCall)]
    assert orjson.loads(calls[0].arguments) == {"searchId": "sr_1"}


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
    "titles": lambda n: "CTOs and VP of sales " * (n // 21),
    "places": lambda n: "in Lisbon and " * (n // 14),
    "possessives": lambda n: "Acme's " * (n // 7),
    "thousands": lambda n: "1,000," * (n // 6),
    "digits only": lambda n: "1" * n,
    "apostrophes": lambda n: "x'" * (n // 2),
    "linkedin": lambda n: "linkedin.com/in/" + "-" * n + "!",
    "names": lambda n: "look up " + "Jane " * (n // 5),
}
# Every compiled pattern of the modules that read chat text.
PATTERNS = {
    f"{module.__name__}.{name}": value
    for module in (planner, request_parser)
    for name, value in vars(module).items()
    if isinstance(value, re.Pattern)
}


def _grows_linearly(run: Callable[[str], object], make: Callable[[int], str]) -> float:
    """time(4n) / time(n): about 4 when linear, about 16 when quadratic.

    The fastest of repeated runs of each, the two sizes taking turns for at
    least 50 ms, so a busy machine slows both alike and noise fades in the minimum.
    """
    small, large = make(1000), make(4000)
    best = {small: float("inf"), large: float("inf")}
    spent = 0.0
    runs = 0
    gc.collect()
    gc.disable()  # a collection landing in one run is not the code's growth
    try:
        while runs < 5 or spent < 0.05:
            for text in (small, large):
                started = time.perf_counter()
                run(text)
                took = time.perf_counter() - started
                best[text] = min(best[text], took)
                spent += took
            runs += 1
    finally:
        gc.enable()
    return best[large] / max(best[small], 1e-7)


def test_the_patterns_under_test_are_all_of_the_planners():
    names = {name.rsplit(".", 1)[1] for name in PATTERNS}
    assert {"SPOKEN_PIECES", "TOKEN", "LINKEDIN"} <= names


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
