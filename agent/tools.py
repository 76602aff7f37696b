"""The tools the model may call, their argument models and their code.

Each tool's pydantic model is the one source of its shape: it produces the
JSON Schema sent to the model and validates what the model sends back. A
call that does not validate is answered to the model as a tool error with
the reason, so it can correct itself. Full lead rows never go back to the
model: searches stream rows to the client (`leads:batch`) and hand the model
a compact summary with a `searchId` that saving and exporting refer to.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from leadstream.agent.budget import DailyCredits
from leadstream.agent.events import TurnEvents
from leadstream.agent.providers.base import LeadProvider, LeadSearch, ProviderError
from leadstream.errors import LeadstreamError, field_errors, field_summary
from leadstream.store.base import Store
from leadstream.store.people_generator import INDUSTRY_NAMES
from leadstream.store.records import LeadFilter, LeadInput, Person, new_id


class ToolError(LeadstreamError):
    """A tool failure the model is told about (and can act on)."""


# -- argument models -------------------------------------------------------


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class SearchLeadsArgs(_Args):
    """Search for people (leads). Rows go to the user's screen; you get a summary."""

    title: str | None = Field(None, max_length=200, description="Job title, e.g. 'CTO', 'VP Sales'")
    company: str | None = Field(None, max_length=200, description="Current employer")
    industry: str | None = Field(
        None, max_length=100, description="One of " + ",".join(INDUSTRY_NAMES)
    )
    location: str | None = Field(None, max_length=200, description="City or country")
    seniority: str | None = Field(
        None, max_length=50, description="c_level, vp, head, director, manager, senior, entry"
    )
    keywords: str | None = Field(None, max_length=200, description="Extra words, comma separated")
    hasPhone: bool = False
    hasEmail: bool = False
    limit: int | None = Field(None, ge=1, description="Default 100")


class SaveFilter(_Args):
    hasPhone: bool | None = None
    hasEmail: bool | None = None


class SaveLeadsArgs(_Args):
    """Save the leads of an earlier search to the user's lead list."""

    searchId: str = Field(..., min_length=1, max_length=100)
    filter: SaveFilter | None = None
    personIds: list[str] | None = Field(None, max_length=1000)


class ExportFilter(_Args):
    hasPhone: bool | None = None
    hasEmail: bool | None = None
    q: str | None = Field(None, max_length=200)
    company: str | None = Field(None, max_length=200)
    tag: str | None = Field(None, max_length=100)
    ids: list[str] | None = Field(None, max_length=10_000)

    def to_lead_filter(self) -> LeadFilter:
        return LeadFilter(
            has_phone=bool(self.hasPhone),
            has_email=bool(self.hasEmail),
            q=self.q or None,
            company=self.company or None,
            tag=self.tag or None,
            ids=tuple(self.ids) if self.ids is not None else None,
        )


class ExportLeadsArgs(_Args):
    """CSV of a search's rows (searchId) or of saved leads (filter); the link reaches the user."""

    filter: ExportFilter | None = None
    searchId: str | None = Field(None, max_length=100)


class LookupProfileArgs(_Args):
    """Look up one person's full profile (contacts included)."""

    personId: str | None = Field(None, max_length=100)
    name: str | None = Field(None, max_length=200)
    company: str | None = Field(None, max_length=200)
    linkedin: str | None = Field(None, max_length=300)

    @model_validator(mode="after")
    def _one_key(self) -> LookupProfileArgs:
        if not (self.personId or self.linkedin or self.name):
            raise ValueError("give personId, linkedin, or name (with company if known)")
        return self


# -- context ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """An export to run as a job: saved leads by filter, or a search's rows."""

    org: str
    user: str
    filter: LeadFilter | None = None
    search_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Everything a tool call may use; built per turn by the loop's caller.

    `daily_credits` is the org's paid lookups per UTC day (None: no cap).
    """

    org: str
    user: str
    conversation_id: str
    store: Store
    provider: LeadProvider
    events: TurnEvents
    start_export: Callable[[ExportRequest], Awaitable[str]]
    search_default: int
    search_max: int
    daily_credits: int | None = None

    def credits(self) -> DailyCredits:
        """The org's lookup credits for one tool call (settle them after it)."""
        return DailyCredits(self.store, self.org, self.daily_credits)


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What the model gets back (`result`), and a one-line summary for people."""

    result: dict[str, Any]
    summary: str
    ok: bool
    #: the part of `result` the user's clients get in `chat:tool` (an export's jobId)
    public: dict[str, Any] | None = None


# -- the tools ---------------------------------------------------------------


async def search_leads(ctx: ToolContext, call_id: str, args: SearchLeadsArgs) -> ToolOutcome:
    limit = args.limit or ctx.search_default
    if limit > ctx.search_max:
        raise ToolError("limit_too_high", f"limit must be at most {ctx.search_max}")
    credits = ctx.credits()
    query = LeadSearch(
        title=args.title,
        company=args.company,
        industry=args.industry,
        location=args.location,
        seniority=args.seniority,
        keywords=tuple(k for k in (args.keywords or "").split(",") if k.strip()),
        has_phone=args.hasPhone,
        has_email=args.hasEmail,
        credits=credits,
    )
    search_id = new_id("sr")
    found: list[Person] = []
    shown_args = args.model_dump(exclude_none=True, exclude_defaults=True)
    seq = 0
    try:
        # aclosing: stopping early (limit reached, or chat:stop) closes the
        # provider's stream at once, cancelling its in-flight lookups.
        async with aclosing(ctx.provider.search(query, limit=limit)) as pages:
            async for page in pages:
                page = page[: limit - len(found)]
                saved = await ctx.store.saved_by_person(
                    ctx.org, ctx.provider.source, [p.person_id for p in page]
                )
                rows = [_result_row(person, saved.get(person.person_id)) for person in page]
                found.extend(page)
                await ctx.events.batch(call_id, search_id, rows, seq, done=False)
                seq += 1
                await ctx.events.tool(
                    call_id,
                    "search_leads",
                    shown_args,
                    "progress",
                    progress={"done": len(found), "total": limit},
                )
                if len(found) >= limit:
                    break
    except ProviderError as exc:
        raise _tool_error(exc, credits) from None
    finally:
        await credits.settle()
    await ctx.events.batch(call_id, search_id, [], seq, done=True, total=len(found))
    await ctx.store.save_search(
        ctx.org, ctx.user, ctx.conversation_id, shown_args, found, search_id=search_id
    )
    with_phone = sum(1 for p in found if p.phones)
    with_email = sum(1 for p in found if p.emails)
    result: dict[str, Any] = {
        "searchId": search_id,
        "found": len(found),
        "withPhone": with_phone,
        "withEmail": with_email,
        "sample": [
            {"personId": p.person_id, "name": p.name, "title": p.title, "company": p.company}
            for p in found[:5]
        ],
        "facets": {
            "industry": _top(p.industry for p in found),
            "location": _top(p.location for p in found),
        },
    }
    summary = f"found {len(found)} ({with_phone} with phone, {with_email} with email)"
    if credits.used:
        result["creditsUsed"] = credits.used
        summary += f"; {credits.used} lookup credits used"
    if credits.exhausted and len(found) < limit:
        result["creditsExhausted"] = True
        summary += "; stopped early: today's lookup credits are used up"
    return ToolOutcome(result, summary, True)


async def save_leads(ctx: ToolContext, call_id: str, args: SaveLeadsArgs) -> ToolOutcome:
    search = await ctx.store.get_search(ctx.org, args.searchId)
    if search is None:
        raise ToolError("unknown_search", "that searchId is unknown or expired; search again")
    people = search.people
    if args.personIds is not None:
        wanted = set(args.personIds)
        people = [p for p in people if p.person_id in wanted]
    if args.filter and args.filter.hasPhone:
        people = [p for p in people if p.phones]
    if args.filter and args.filter.hasEmail:
        people = [p for p in people if p.emails]
    written = await ctx.store.upsert_leads(ctx.org, [LeadInput.from_person(p) for p in people])
    skipped = len(search.people) - written.saved - written.updated
    result = {"saved": written.saved, "updated": written.updated, "skipped": skipped}
    return ToolOutcome(result, f"saved {written.saved}, updated {written.updated}", True)


async def export_leads(ctx: ToolContext, call_id: str, args: ExportLeadsArgs) -> ToolOutcome:
    if args.searchId is not None and await ctx.store.get_search(ctx.org, args.searchId) is None:
        raise ToolError("unknown_search", "that searchId is unknown or expired; search again")
    request = ExportRequest(
        org=ctx.org,
        user=ctx.user,
        filter=args.filter.to_lead_filter() if args.filter else None,
        search_id=args.searchId,
    )
    job_id = await ctx.start_export(request)
    return ToolOutcome({"jobId": job_id}, "export started", True, public={"jobId": job_id})


async def lookup_profile(ctx: ToolContext, call_id: str, args: LookupProfileArgs) -> ToolOutcome:
    credits = ctx.credits()
    try:
        person = await ctx.provider.lookup(
            person_id=args.personId,
            name=args.name,
            company=args.company,
            linkedin=args.linkedin,
            credits=credits,
        )
    except ProviderError as exc:
        raise _tool_error(exc, credits) from None
    finally:
        await credits.settle()
    if person is None:
        raise ToolError("not_found", "no matching profile")
    profile = person.to_wire()
    profile["seniority"] = person.seniority
    return ToolOutcome(profile, f"{person.name}, {person.title} at {person.company}", True)


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    args_model: type[_Args]
    run: Callable[[ToolContext, str, Any], Awaitable[ToolOutcome]]

    def schema(self) -> dict[str, Any]:
        """The OpenAI `tools` entry of this tool."""
        parameters = self.args_model.model_json_schema()
        parameters.pop("title", None)
        # Docstring indentation would be billed as tokens on every call.
        description = inspect.cleandoc(self.args_model.__doc__ or "")
        parameters.pop("description", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": description, "parameters": parameters},
        }


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool("search_leads", SearchLeadsArgs, search_leads),
        Tool("save_leads", SaveLeadsArgs, save_leads),
        Tool("export_leads", ExportLeadsArgs, export_leads),
        Tool("lookup_profile", LookupProfileArgs, lookup_profile),
    )
}


def tool_schemas() -> list[dict[str, Any]]:
    return [tool.schema() for tool in TOOLS.values()]


def parse_arguments(name: str, arguments: str) -> tuple[Tool, _Args]:
    """Validate a model's tool call; raises ToolError with a reason it can fix."""
    tool = TOOLS.get(name)
    if tool is None:
        raise ToolError(
            "unknown_tool", f"there is no tool named {name!r}; use one of {list(TOOLS)}"
        )
    try:
        raw = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError as exc:
        raise ToolError("invalid_arguments", f"arguments are not valid JSON: {exc}") from None
    try:
        return tool, tool.args_model.model_validate(raw)
    except ValidationError as exc:
        reasons = field_summary(field_errors(exc), whole="arguments")
        raise ToolError("invalid_arguments", reasons) from None


def _tool_error(exc: ProviderError, credits: DailyCredits) -> ToolError:
    """A provider's refusal as the model (and the user) should read it."""
    if exc.code == "credits_exhausted":
        return ToolError(exc.code, credits.exhausted_message())
    return ToolError(exc.code, exc.message)


def _result_row(person: Person, saved: Any) -> dict[str, Any]:
    row = person.to_wire()
    if saved is not None:
        row["id"] = saved.id
        row["createdAt"] = saved.created_at
    return row


def _top(values: Any, n: int = 3) -> dict[str, int]:
    return dict(Counter(v for v in values if v).most_common(n))
