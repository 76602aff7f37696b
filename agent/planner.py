"""The offline planner: a deterministic, rule-based stand-in for an LLM.

It speaks the `ChatModel` interface: given the conversation and the tools it
streams text and emits the same tool calls an LLM would make for the common
requests of this product, so everything works with no model configured.
What it understands (see `plan_request`):

- "find/get/show [me] N <titles> [at <company>] [in <industry>] [in <location>]
  [with phone numbers | emails]" (optionally "... and save them [and export to csv]")
- "save them", "save all", "save the ones with phones / emails"
- "export (them) to csv", "export my saved leads"
- "look up <name> at <company>"

Anything else gets a short answer saying what it can do and how to
configure an LLM. It never raises to the user: every path ends in text.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from leadstream.agent.model import ChatMessage, ModelEvent, TextDelta, ToolCall, Usage
from leadstream.agent.providers.local_directory import canonical_industry
from leadstream.store.records import new_id

NUMBER_WORDS = {
    "a few": 10, "a dozen": 12, "a couple of": 2, "a hundred": 100, "a hundred and fifty": 150,
    "one hundred": 100, "two hundred": 200, "one": 1, "two": 2, "three": 3, "four": 4,
    "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "twelve": 12,
    "fifteen": 15, "twenty": 20, "twenty-five": 25, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
}  # fmt: skip
_NUMBER = "|".join(sorted((re.escape(w) for w in NUMBER_WORDS), key=len, reverse=True))
# Every pattern here runs on user text, so each matches in time linear in its
# input: a quantified run is possessive (`++`, `*+`) or anchored, and a pattern
# that `search`es over a run starts only where the run starts (`(?<!\s)`), so
# no run is rescanned from each of its characters.
SEARCH = re.compile(
    r"^(?:(?:please|hey|hi|ok|okay|now)[,!]?\s++)*+(?:(?:can|could|would) you\s++)?"
    r"(?:please\s++)?(?:find|get|show|search for|search|look for|give|pull|list)\s++(?:me\s++)?"
    rf"(?:(?P<count>\d[\d,]*+|{_NUMBER})(?:\s++|$))?(?P<rest>.*)$",
    re.IGNORECASE,
)
LOOKUP = re.compile(
    r"^(?:please\s++)?(?:look\s*+up|lookup|enrich|who is|tell me about)\s++(?P<who>.+)$",
    re.IGNORECASE,
)
# "<name> at <company>": the first "at/from/of" after the name's first character.
LOOKUP_COMPANY = re.compile(r"(?<!\s)\s++(?:at|from|of)\s++(?=.)", re.IGNORECASE)
SAVE = re.compile(
    r"^(?:please\s++|ok\s++|now\s++)*+(?:save|keep|add)\b(?P<rest>.*)$", re.IGNORECASE
)
EXPORT = re.compile(r"\b(?:export|download|csv)\b", re.IGNORECASE)
PHONE = re.compile(r"\b(?:phone|phones|phone numbers?|mobiles?|mobile numbers?|numbers?|cell)\b")
EMAIL = re.compile(r"\b(?:e-?mails?|e-?mail addresses|email address)\b")
# Searched from the last comma on (see `_plan_search`): what follows is the clause.
WITH_CLAUSE = re.compile(r"(?<!\s)\s++(?:with|who have|that have|having)\s++")
# A run of ",", "and", "then" (spaces between) right before "save"/"export"; it
# starts only where the run starts, and the run is read once.
FOLLOW_UPS = re.compile(
    r"(?<![\s,])(?<!\band)(?<!\bthen)(?:\s*+(?:,|\band\b|\bthen\b))++\s*+(?=(?:save|export)\b)"
)
PREPOSITIONS = re.compile(
    r"(?<!\s)\s++(?P<prep>working at|who work at|based in|located in|at|in|from|for)\s++",
    re.IGNORECASE,
)
ARTICLE = re.compile(r"^(?:a|an|some|the|any|all)\s++", re.IGNORECASE)
# A word and the space after it: how `_say` streams text.
SPOKEN_PIECES = re.compile(r"\S++\s*+|\s++")
GENERIC_TITLES = {"lead", "leads", "people", "person", "contacts", "contact", "prospects",
                  "decision makers", "decision-makers", "profiles", "employees", "folks"}  # fmt: skip
SECTOR_SUFFIX = re.compile(
    r"(?<!\s)\s++(?:companies|company|startups?|industry|sector|space|firms?)$"
)

OFFLINE_PLANNER_LABEL = "offline-planner (rule-based, no LLM)"
HELP = (
    "I'm the offline planner, a rule-based assistant that runs without an LLM. I can:\n"
    '- find leads: "Find 100 CTOs in fintech with phone numbers", '
    '"Get 20 VPs of Sales at Novapay in London"\n'
    '- save them: "save them" or "save the ones with phones"\n'
    '- export: "export to csv"\n'
    '- look someone up: "look up Jane Smith at Cloudly"\n'
    "For free-form conversation, configure an OpenAI-compatible model: set OPENAI_API_KEY "
    "(and OPENAI_BASE_URL / LEADSTREAM_MODEL for vLLM, Ollama or llama.cpp) and restart "
    "`leadstream serve`."
)


@dataclass
class Plan:
    """What to do for one user message: tool steps in order, or just text."""

    steps: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    text: str | None = None
    note: str | None = None  # said before the results (e.g. a limit was capped)


def plan_request(text: str, *, last_search_id: str | None, search_max: int) -> Plan:
    """Turn one user message into tool steps, or an answer. Deterministic."""
    message = " ".join(text.strip().split())
    message = message.rstrip(".!? ")
    if not message:
        return Plan(text=HELP)
    if m := LOOKUP.match(message):
        who = m["who"]
        args = {"name": who.strip()}
        if at := LOOKUP_COMPANY.search(who, 1):
            args = {"name": who[: at.start()].strip(), "company": who[at.end() :].strip()}
        return Plan(steps=[("lookup_profile", args)])
    if m := SEARCH.match(message):
        return _plan_search(m["count"], m["rest"], search_max=search_max)
    if m := SAVE.match(message):
        if last_search_id is None:
            return Plan(text="There is nothing to save yet. Ask me to find some leads first, "
                        "e.g. \"Find 50 CTOs in fintech with phone numbers\".")  # fmt: skip
        plan = Plan(steps=[("save_leads", _save_args(m["rest"], last_search_id))])
        if EXPORT.search(m["rest"]):
            plan.steps.append(("export_leads", {"searchId": last_search_id}))
        return plan
    if EXPORT.search(message):
        lowered = message.lower()
        if "saved" in lowered or "my leads" in lowered or last_search_id is None:
            export_filter = {}
            if PHONE.search(lowered):
                export_filter["hasPhone"] = True
            if EMAIL.search(lowered):
                export_filter["hasEmail"] = True
            return Plan(
                steps=[("export_leads", {"filter": export_filter} if export_filter else {})]
            )
        return Plan(steps=[("export_leads", {"searchId": last_search_id})])
    return Plan(text=HELP)


def _plan_search(count: str | None, rest: str, *, search_max: int) -> Plan:
    follow_ups: list[str] = []
    if m := FOLLOW_UPS.search(rest):
        tail = rest[m.end() :].lower()
        rest = rest[: m.start()]
        if tail.startswith("save"):
            follow_ups.append("save_leads")
        if EXPORT.search(tail):
            follow_ups.append("export_leads")
    args: dict[str, Any] = {}
    # The clause runs to the end, so it is after the last comma: searching from
    # there reads each character once however many "with"s come before.
    if m := WITH_CLAUSE.search(rest, rest.rfind(",") + 1):
        what = rest[m.end() :].lower()
        if PHONE.search(what):
            args["hasPhone"] = True
        if EMAIL.search(what):
            args["hasEmail"] = True
        if "hasPhone" in args or "hasEmail" in args:
            rest = rest[: m.start()]
    parts = PREPOSITIONS.split(rest)
    title = ARTICLE.sub("", parts[0].strip(), count=1)
    for prep, value in zip(parts[1::2], parts[2::2], strict=True):
        value = value.strip()
        prep = prep.lower()
        if not value:
            continue
        if prep in ("at", "working at", "who work at", "for"):
            args["company"] = value
            continue
        sector = SECTOR_SUFFIX.sub("", value)
        if canonical_industry(sector) and "industry" not in args:
            args["industry"] = canonical_industry(sector)
        elif sector != value:
            args["keywords"] = sector
        elif "location" not in args:
            args["location"] = value
        else:
            args["company"] = value
    if title.lower() not in GENERIC_TITLES and title:
        args["title"] = title
    if not any(key in args for key in ("title", "company", "industry", "location")):
        return Plan(text="Tell me who to look for: a job title, and optionally an industry, "
                    "company or location, e.g. \"Find 100 CTOs in fintech with phone numbers\".")  # fmt: skip
    note = None
    if count is not None:
        limit = _number(count)
        if limit > search_max:
            note = (
                f"I can fetch at most {search_max} leads per search, so I'm getting {search_max}."
            )
            limit = search_max
        args["limit"] = max(limit, 1)
    steps: list[tuple[str, dict[str, Any]]] = [("search_leads", args)]
    # Follow-ups need the searchId, so they are planned after the search returns.
    return Plan(steps=steps + [(step, {}) for step in follow_ups], note=note)


def _save_args(rest: str, search_id: str) -> dict[str, Any]:
    args: dict[str, Any] = {"searchId": search_id}
    save_filter = {}
    lowered = rest.lower()
    if PHONE.search(lowered):
        save_filter["hasPhone"] = True
    if EMAIL.search(lowered):
        save_filter["hasEmail"] = True
    if save_filter:
        args["filter"] = save_filter
    return args


def _number(count: str) -> int:
    count = count.lower()
    return NUMBER_WORDS[count] if count in NUMBER_WORDS else int(count.replace(",", ""))


class OfflinePlanner:
    """The `ChatModel` used when no LLM is configured.

    :param search_max: the largest search it asks for (capped, and said so).
    :param max_chars: how much of a message it reads; a longer one is planned
        from its start. With the patterns' linear cost this bounds the time a
        plan holds the event loop (well under a millisecond at 2,000).
    """

    name = "offline-planner"

    def __init__(self, *, search_max: int = 200, max_chars: int = 2000) -> None:
        self._search_max = search_max
        self._max_chars = max_chars

    async def stream(
        self, messages: list[ChatMessage], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ModelEvent]:
        user_index = max(i for i, m in enumerate(messages) if m["role"] == "user")
        user_text = str(messages[user_index].get("content") or "")[: self._max_chars]
        done = _tool_results(messages[user_index + 1 :])
        plan = plan_request(
            user_text, last_search_id=_last_search_id(messages[:user_index]),
            search_max=self._search_max,
        )  # fmt: skip
        if plan.text is not None:
            async for event in _say(plan.text):
                yield event
            return
        if len(done) < len(plan.steps) and not any("error" in r for _, r in done):
            name, args = plan.steps[len(done)]
            if name in ("save_leads", "export_leads") and "searchId" not in args:
                # A follow-up of this turn's search ("... and save them").
                search_id = _last_search_id(messages) or ""
                args = {"searchId": search_id}
            if not done and plan.note:
                async for event in _say(plan.note + "\n\n"):
                    yield event
            yield ToolCall(id=new_id("call"), name=name, arguments=orjson.dumps(args).decode())
            yield Usage(0, 0)
            return
        async for event in _say(_report(done)):
            yield event


def _tool_results(messages: list[ChatMessage]) -> list[tuple[str, dict[str, Any]]]:
    """(tool name, result) of the tool calls made since the user's message."""
    names: dict[str, str] = {}
    results: list[tuple[str, dict[str, Any]]] = []
    for message in messages:
        for call in message.get("tool_calls") or ():
            names[call["id"]] = call["function"]["name"]
        if message["role"] == "tool":
            results.append((names.get(message["tool_call_id"], "?"), _loads(message["content"])))
    return results


def _last_search_id(messages: list[ChatMessage]) -> str | None:
    for message in reversed(messages):
        if message["role"] == "tool":
            search_id = _loads(message["content"]).get("searchId")
            if search_id:
                return str(search_id)
    return None


def _loads(content: Any) -> dict[str, Any]:
    try:
        value = orjson.loads(content or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _report(done: list[tuple[str, dict[str, Any]]]) -> str:
    """The closing text of a turn, from what its tools returned."""
    lines = []
    for name, result in done:
        if "error" in result:
            error = result["error"]
            lines.append(f"I couldn't run {name}: {error.get('message', 'unknown error')}.")
        elif name == "search_leads":
            found = result.get("found", 0)
            if not found:
                lines.append("I found no matching leads. Try a broader title, another "
                             "industry or location, or drop the phone/email requirement.")  # fmt: skip
                continue
            sample = ", ".join(
                f"{row['name']} ({row['title']}, {row['company']})"
                for row in result.get("sample", [])[:3]
            )
            lines.append(
                f"I found {found} leads: {result.get('withPhone', 0)} with a phone number and "
                f"{result.get('withEmail', 0)} with an email. They're in the results panel; "
                f"for example {sample}."
            )
        elif name == "save_leads":
            lines.append(
                f"Saved {result.get('saved', 0)} new leads"
                f" ({result.get('updated', 0)} updated, {result.get('skipped', 0)} skipped)."
            )
        elif name == "export_leads":
            lines.append("Your CSV export is being prepared; the download link will appear "
                         "here when it's ready.")  # fmt: skip
        elif name == "lookup_profile":
            lines.append(_profile_text(result))
    if done and done[-1][0] == "search_leads" and done[-1][1].get("found"):
        lines.append('Say "save them" to add them to your leads, or "export to csv".')
    return "\n\n".join(lines) or HELP


def _profile_text(p: dict[str, Any]) -> str:
    parts = [f"{p.get('name')} — {p.get('title')} at {p.get('company')}"]
    if p.get("location"):
        parts.append(f"Location: {p['location']}")
    parts.append("Email: " + (", ".join(p.get("emails") or []) or "none on file"))
    parts.append("Phone: " + (", ".join(p.get("phones") or []) or "none on file"))
    if p.get("linkedin"):
        parts.append(f"LinkedIn: {p['linkedin']}")
    return "\n".join(parts)


async def _say(text: str) -> AsyncIterator[ModelEvent]:
    """Stream text a word at a time, as a model would."""
    for piece in SPOKEN_PIECES.findall(text):
        yield TextDelta(piece)
        await asyncio.sleep(0)
    yield Usage(0, 0)
