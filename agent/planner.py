"""The offline planner: a deterministic, rule-based stand-in for an LLM.

It speaks the `ChatModel` interface: given the conversation and the tools it
streams text and makes the tool calls an LLM would make (same tools, same
argument schemas), so everything works with no model configured. It reads a
message with `agent.request_parser` (slots: count, titles, industry,
location, company, contacts; then the intent) and plans with the
conversation: a message that only changes something ("only the ones in
London", "make it 50", "now VPs instead", "more") refines the last search,
keeping its arguments. A search that finds nothing is followed by one
broader search, and the answer says what was dropped.

It never raises to the user: every path ends in text.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from leadstream.agent.model import ChatMessage, ModelEvent, TextDelta, ToolCall, Usage
from leadstream.agent.request_parser import RequestParse, SearchSlots, parse_request
from leadstream.store.records import new_id

# A word and the space after it: how `_say` streams text.
SPOKEN_PIECES = re.compile(r"\S++\s*+|\s++")

OFFLINE_PLANNER_LABEL = "offline-planner (rule-based parser, no LLM)"
HELP = (
    "I'm the offline planner, a rule-based assistant that runs without an LLM. I can:\n"
    '- find leads: "40 heads of product at gaming studios in Warsaw", '
    '"Find 100 CTOs in fintech with phone numbers"\n'
    '- refine the last search: "only the ones in London", "make it 50", "now VPs instead", '
    '"more"\n'
    '- save them: "save them" or "save the ones with phones"\n'
    '- export: "export to csv", "export my saved leads"\n'
    '- look someone up: "look up Jane Smith at Cloudly"\n'
    "For free-form conversation, configure an OpenAI-compatible model: set OPENAI_API_KEY "
    "(and OPENAI_BASE_URL / LEADSTREAM_MODEL for vLLM, Ollama or llama.cpp) and restart "
    "`leadstream serve`."
)
EXAMPLE = '"Find 50 CTOs in fintech with phone numbers"'
# Marks a save/export step that acts on the search of the same turn, whose id is
# known only once it ran ("find 20 CFOs and save them").
THIS_TURNS_SEARCH = "<this turn's search>"
MAX_TITLES = 3  # one search per title named ("CTOs and CIOs"), at most this many
# What a search that found nothing drops to try again, in this order.
BROADER = ("keywords", "company", "location", "hasPhone", "hasEmail", "seniority", "industry")
NAMED = ("title", "company", "industry", "location", "seniority", "keywords")


@dataclass(frozen=True, slots=True)
class EarlierSearch:
    """The last search of the conversation: its arguments and what it found."""

    args: dict[str, Any]
    search_id: str
    found: int


@dataclass
class Plan:
    """What to do for one user message: tool steps in order, or just text.

    A save/export step without a `searchId` acts on the search run just
    before it in this turn. `broader` is the search to run when the plan's
    only search finds nothing; `notes` are said after the results.
    """

    steps: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    text: str | None = None
    note: str | None = None  # said before the results (e.g. a limit was capped)
    broader: tuple[dict[str, Any], str] | None = None  # (arguments, what was dropped)
    notes: list[str] = field(default_factory=list)


def plan_request(
    text: str,
    *,
    last_search_id: str | None = None,
    last_search: EarlierSearch | None = None,
    search_max: int = 200,
    search_default: int = 100,
) -> Plan:
    """Turn one user message into tool steps, or an answer. Deterministic.

    :param last_search_id: the searchId the conversation last produced (save/export act on it).
    :param last_search: the conversation's last search (refinements change it).
    """
    parse = parse_request(" ".join(text.split()))
    if parse.intent == "lookup":
        if parse.linkedin:
            return Plan(steps=[("lookup_profile", {"linkedin": parse.linkedin})])
        args = {"name": parse.name}
        if parse.slots.company:
            args["company"] = parse.slots.company
        return Plan(steps=[("lookup_profile", args)])
    if parse.intent == "save":
        if last_search_id is None:
            return Plan(
                text="There is nothing to save yet. Ask me to find some leads first, "
                f"e.g. {EXAMPLE}."
            )
        plan = Plan(steps=[("save_leads", _with_filter({"searchId": last_search_id}, parse))])
        if parse.then:
            plan.steps.append(("export_leads", {"searchId": last_search_id}))
        return plan
    if parse.intent == "export":
        if parse.saved or last_search_id is None:
            export = _with_filter({}, parse)
            if parse.slots.company:
                export.setdefault("filter", {})["company"] = parse.slots.company
            return Plan(steps=[("export_leads", export)])
        return Plan(steps=[("export_leads", {"searchId": last_search_id})])
    if parse.intent == "more":
        return _plan_more(parse.slots, last_search, search_max, search_default)
    if parse.intent == "search":
        return _plan_search(parse, last_search, search_max)
    return Plan(text=HELP)


def _with_filter(args: dict[str, Any], parse: RequestParse) -> dict[str, Any]:
    """`args` with the contact filter of a save or export ("the ones with phones")."""
    wanted = {"hasPhone": parse.slots.has_phone, "hasEmail": parse.slots.has_email}
    chosen = {key: True for key, value in wanted.items() if value}
    return {**args, "filter": chosen} if chosen else args


def _plan_search(parse: RequestParse, last: EarlierSearch | None, search_max: int) -> Plan:
    slots = parse.slots
    # A change to the last search unless it names a new one ("find 10 people at Stripe").
    new = parse.complete or (parse.asked and slots.any_slot())
    refine = last is not None and (parse.refines or not new)
    if not refine and not (parse.complete or (parse.asked and slots.any_slot())):
        understood = _understood(slots)
        start = f"I understood {understood}, but not" if understood else "I didn't catch"
        return Plan(
            text=f"{start} who to look for. Tell me a job title or an industry, and "
            f"optionally a company or location, e.g. {EXAMPLE}."
        )
    base = dict(last.args) if refine and last is not None else {}
    args = _apply(base, slots)
    notes: list[str] = []
    note = None
    if slots.count is not None:
        args["limit"] = slots.count
    if args.get("limit", 0) > search_max:
        note = f"I can fetch at most {search_max} leads per search, so I'm getting {search_max}."
        args["limit"] = search_max
    if not any(key in args for key in NAMED):
        return Plan(
            text=f"Tell me who to look for: a job title, and optionally an industry, "
            f"company or location, e.g. {EXAMPLE}."
        )
    if slots.keywords:
        words = ", ".join(f'"{k}"' for k in slots.keywords)
        notes.append(
            f"I didn't recognise {words}, so I searched for it as keywords in titles "
            "and company names."
        )
    if parse.unused:
        also = ", ".join(parse.unused)
        notes.append(
            f"One search takes one value of each kind, so I left out {also}; say "
            f'"same for {parse.unused[0]}" to search that too.'
        )
    titles = slots.titles[:MAX_TITLES] if len(slots.titles) > 1 else [None]
    steps: list[tuple[str, dict[str, Any]]] = []
    for title in titles:
        search = dict(args, title=title) if title is not None else args
        steps.append(("search_leads", search))
        # Follow-ups need the searchId, so they are filled in after the search returns.
        steps.extend((name, {"searchId": THIS_TURNS_SEARCH}) for name in parse.then)
    broader = _broader(args) if len(titles) == 1 else None
    return Plan(steps=steps, note=note, broader=broader, notes=notes)


def _apply(args: dict[str, Any], slots: SearchSlots) -> dict[str, Any]:
    """The search `args` changed by what the message says (a new search starts from {})."""
    if slots.titles:
        args["title"] = slots.titles[0]
    for key, value in (
        ("industry", slots.industry),
        ("location", slots.location),
        ("company", slots.company),
        ("seniority", slots.seniority),
    ):
        if value:
            args[key] = value
    if slots.anywhere:
        args.pop("location", None)
    for slot in slots.drop:
        if slot == "filters":  # all but who: the title (or what else names people)
            kept = {k: v for k, v in args.items() if k in ("title", "limit")}
            args = kept if "title" in kept else args
        else:
            args.pop(slot, None)
    if slots.keywords:
        args["keywords"] = ", ".join(slots.keywords)
    for key, wanted in (("hasPhone", slots.has_phone), ("hasEmail", slots.has_email)):
        if wanted:
            args[key] = True
        elif wanted is False:
            args.pop(key, None)
    return args


def _plan_more(
    slots: SearchSlots, last: EarlierSearch | None, search_max: int, search_default: int
) -> Plan:
    """ "more": the search tool has no offset, so the same search with a larger limit."""
    if last is None:
        return Plan(
            text=f"There is no search to continue yet. Ask me for some leads first, e.g. {EXAMPLE}."
        )
    fetched = int(last.args.get("limit") or search_default)
    if last.found < fetched:
        return Plan(
            text=f"That search already found every match: {last.found} "
            f'{_describe(last.args)}. For more, broaden it, e.g. "anywhere" or '
            "another industry."
        )
    if fetched >= search_max:
        return Plan(
            text=f"That search already fetched {fetched}, the most one search can. "
            'Narrow it down for different leads, e.g. "only the ones in London".'
        )
    limit = min(fetched + (slots.count or fetched), search_max)
    note = f"Here are {limit - fetched} more: the same search, fetching {limit} this time."
    return Plan(steps=[("search_leads", dict(last.args, limit=limit))], note=note)


def _broader(args: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The same search without its narrowest requirement, if something is left."""
    for key in BROADER:
        if key in args:
            rest = {k: v for k, v in args.items() if k != key}
            if any(k in rest for k in NAMED):
                return rest, _requirement(key, args[key])
    return None


def _requirement(key: str, value: Any) -> str:
    if key == "hasPhone":
        return "the phone number requirement"
    if key == "hasEmail":
        return "the email requirement"
    if key == "keywords":
        return f'the keywords "{value}"'
    return str(value)


def _describe(args: dict[str, Any]) -> str:
    """A search's arguments in words: "CTOs at Acme in fintech in London with emails"."""
    words = [args.get("title") or "leads"]
    if args.get("seniority"):
        words.append(f"({args['seniority'].replace('_', '-')} level)")
    if args.get("company"):
        words.append(f"at {args['company']}")
    if args.get("industry"):
        words.append(f"in {args['industry']}")
    if args.get("location"):
        words.append(f"in {args['location']}")
    contacts = [
        w for k, w in (("hasPhone", "phone numbers"), ("hasEmail", "emails")) if args.get(k)
    ]
    if contacts:
        words.append("with " + " and ".join(contacts))
    if args.get("keywords"):
        words.append(f'matching "{args["keywords"]}"')
    return " ".join(words)


def _understood(slots: SearchSlots) -> str:
    """What a message said that is not enough to search on, in words ("50 leads in Berlin")."""
    if not (slots.count or slots.location or slots.company or slots.has_phone or slots.has_email):
        return ""
    parts = [f"{slots.count} leads" if slots.count else "leads"]
    for what, value in (("in", slots.location), ("at", slots.company)):
        if value:
            parts.append(f"{what} {value}")
    if slots.has_phone:
        parts.append("with phone numbers")
    if slots.has_email:
        parts.append("with emails")
    return " ".join(parts)


class OfflinePlanner:
    """The `ChatModel` used when no LLM is configured.

    :param search_max: the largest search it asks for (capped, and said so).
    :param search_default: the limit a search without one gets (what "more" adds to).
    :param max_chars: how much of a message it reads; a longer one is planned
        from its start. The parser is linear in the text; this bounds the
        time a plan holds the event loop (an ordinary request takes under
        0.2 ms, a message of 2,000 characters about 2-3 ms).
    """

    name = "offline-planner"

    def __init__(
        self, *, search_max: int = 200, search_default: int = 100, max_chars: int = 2000
    ) -> None:
        self._search_max = search_max
        self._search_default = search_default
        self._max_chars = max_chars

    async def stream(
        self, messages: list[ChatMessage], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ModelEvent]:
        user_index = max(i for i, m in enumerate(messages) if m["role"] == "user")
        user_text = str(messages[user_index].get("content") or "")[: self._max_chars]
        earlier = _tool_calls(messages[:user_index])
        done = _tool_calls(messages[user_index + 1 :])
        plan = plan_request(
            user_text,
            last_search_id=_last_search_id(earlier),
            last_search=_last_search(earlier),
            search_max=self._search_max,
            search_default=self._search_default,
        )
        if plan.text is not None:
            async for event in _say(plan.text):
                yield event
            return
        call = next_call(plan, done)
        if call is not None:
            if not done and plan.note:
                async for event in _say(plan.note + "\n\n"):
                    yield event
            name, args = call
            yield ToolCall(id=new_id("call"), name=name, arguments=orjson.dumps(args).decode())
            yield Usage(0, 0)
            return
        async for event in _say(report(plan, done)):
            yield event


Done = tuple[str, dict[str, Any], dict[str, Any]]  # (tool, arguments, result)


def next_call(plan: Plan, done: list[Done]) -> tuple[str, dict[str, Any]] | None:
    """The next tool call of `plan` after the calls `done` this turn, or None: answer."""
    if any("error" in result for _, _, result in done):
        return None
    searches = [k for k, (name, _) in enumerate(plan.steps) if name == "search_leads"]
    if len(searches) == 1 and done and done[0][0] == "search_leads" and not done[0][2].get("found"):
        # The only search found nothing: try once without its narrowest requirement.
        if plan.broader is not None and len(done) == 1:
            return "search_leads", plan.broader[0]
        return None
    if len(done) >= len(plan.steps):
        return None
    name, args = plan.steps[len(done)]
    if args.get("searchId") == THIS_TURNS_SEARCH:
        # A follow-up of this turn's search ("... and save them"). An export with no
        # searchId at all is of the saved leads ("export my saved leads").
        search_id = next(
            (str(r["searchId"]) for n, _, r in reversed(done) if n == "search_leads"), ""
        )
        args = {"searchId": search_id}
    return name, args


def _tool_calls(messages: list[ChatMessage]) -> list[Done]:
    """(tool, arguments, result) of the tool calls in `messages` that have a result."""
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    done: list[Done] = []
    for message in messages:
        for call in message.get("tool_calls") or ():
            function = call["function"]
            calls[call["id"]] = (function["name"], _loads(function.get("arguments")))
        if message["role"] == "tool":
            name, args = calls.get(message["tool_call_id"], ("?", {}))
            done.append((name, args, _loads(message["content"])))
    return done


def _last_search_id(earlier: list[Done]) -> str | None:
    for _, _, result in reversed(earlier):
        if result.get("searchId"):
            return str(result["searchId"])
    return None


def _last_search(earlier: list[Done]) -> EarlierSearch | None:
    for name, args, result in reversed(earlier):
        if name == "search_leads" and result.get("searchId"):
            return EarlierSearch(args, str(result["searchId"]), int(result.get("found") or 0))
    return None


def _loads(content: Any) -> dict[str, Any]:
    try:
        value = orjson.loads(content or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def report(plan: Plan, done: list[Done]) -> str:
    """The closing text of a turn, from what its tools returned."""
    lines = []
    for k, (name, args, result) in enumerate(done):
        if "error" in result:
            error = result["error"]
            lines.append(f"I couldn't run {name}: {error.get('message', 'unknown error')}.")
        elif name == "search_leads":
            lines.append(
                _search_text(
                    args, result, broadened=k == 1 and not done[0][2].get("found"), plan=plan
                )
            )
        elif name == "save_leads":
            lines.append(
                f"Saved {result.get('saved', 0)} new leads"
                f" ({result.get('updated', 0)} updated, {result.get('skipped', 0)} skipped)."
            )
        elif name == "export_leads":
            lines.append(
                "Your CSV export is being prepared; the download link will appear "
                "here when it's ready."
            )
        elif name == "lookup_profile":
            lines.append(_profile_text(result))
    found_some = any(n == "search_leads" and r.get("found") for n, _, r in done)
    lines.extend(plan.notes if found_some or not done else [])
    if done and done[-1][0] == "search_leads" and done[-1][2].get("found"):
        lines.append(
            'Say "save them" to add them to your leads, "export to csv", or refine: '
            '"only the ones in London", "make it 50", "more".'
        )
    return "\n\n".join(lines) or HELP


def _search_text(
    args: dict[str, Any], result: dict[str, Any], *, broadened: bool, plan: Plan
) -> str:
    found = result.get("found", 0)
    what = _describe(args)
    if broadened:
        dropped = plan.broader[1] if plan.broader else "a requirement"
        if not found:
            return (
                f"None without {dropped} either. Try a broader title or another "
                "industry or location."
            )
        limit = args.get("limit")
        count = f"at least {found}" if limit is not None and found >= limit else str(found)
        return (
            f"Without {dropped} there are {count}: {what}. They're in the results panel; "
            'say "save them" to keep them, or ask for something else.'
        )
    if not found:
        tail = (
            ""
            if plan.broader
            else (
                " Try a broader title, another industry or location, "
                "or drop the phone/email requirement."
            )
        )
        return f"I found no {what}.{tail}"
    sample = ", ".join(
        f"{row['name']} ({row['title']}, {row['company']})" for row in result.get("sample", [])[:3]
    )
    return (
        f"I found {found} leads ({what}): {result.get('withPhone', 0)} with a phone number and "
        f"{result.get('withEmail', 0)} with an email. They're in the results panel; "
        f"for example {sample}."
    )


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
