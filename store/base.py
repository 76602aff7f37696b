"""The store's one async interface; `sqlite.SqliteStore` and
`mongodb.MongoStore` implement it, and `tests/test_store_contract.py` runs
the same suite against each.

`Store` is the union of the parts its callers use: `LeadStore` (leads and
their change log), `DirectoryStore` (people), `ConversationStore`
(conversations, messages, search result sets), `JobStore` and `UsageStore`.
A caller that needs one part names that part. What does not depend on the
database is written once beside this protocol: `lead_identity` and
`lead_batch` (lead writes), `paging`, `exchanges`, `jobs`, `listeners`; call
timing is `timing.TimedStore`, applied by `backends.open_store`.

Rules every backend keeps:
- every lead insert, update and delete takes the org's next version in the
  same atomic write as the change, and is logged for `changes_since`;
- change listeners are called on the event loop after the commit, in version
  order for each org;
- lists are keyset-paginated with `store.cursors` (no offsets), bounded, and
  sorted with ties broken by id;
- stats are maintained on write, never counted at request time.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import Any, Protocol

from leadstream.store.lead_search import QueryBounds
from leadstream.store.records import (
    Change,
    ChangesSince,
    Conversation,
    Job,
    Lead,
    LeadFilter,
    LeadInput,
    LeadPage,
    LeadStats,
    Message,
    PeopleQuery,
    Person,
    SearchSet,
    UpsertResult,
)
from leadstream.store.usage import DayUsage

ChangeListener = Callable[[list[Change]], None]


class LeadStore(Protocol):
    """The org's leads and their change log (the live feed, lists, export
    and import)."""

    query_bounds: QueryBounds  # what one search `q` may cost

    def subscribe_changes(self, listener: ChangeListener) -> None:
        """Call `listener(changes)` after each commit that changed leads."""

    async def upsert_leads(self, org: str, items: list[LeadInput]) -> UpsertResult:
        """Insert or update by (org, source, person_id), or merge a new lead
        into the org's lead of the same person (`store.lead_identity`: same
        normalised email, phone or LinkedIn URL, another source); never
        duplicates. Counts are per distinct (source, person_id) of `items`: a
        merged one is `updated` (or `unchanged` if it added nothing)."""

    async def update_lead(self, org: str, lead_id: str, fields: dict[str, Any]) -> Lead | None: ...

    async def delete_lead(self, org: str, lead_id: str) -> bool: ...

    async def get_lead(self, org: str, lead_id: str) -> Lead | None: ...

    async def saved_by_person(
        self, org: str, source: str, person_ids: list[str]
    ) -> dict[str, Lead]: ...

    async def list_leads(
        self,
        org: str,
        *,
        sort: str = "createdAt:desc",
        limit: int = 50,
        cursor: str | None = None,
        filter: LeadFilter | None = None,
    ) -> LeadPage: ...

    def iter_leads(
        self, org: str, filter: LeadFilter | None = None, *, page_size: int = 1000
    ) -> AsyncIterator[list[Lead]]: ...

    async def count_leads(self, org: str, filter: LeadFilter | None = None) -> int: ...

    async def lead_stats(self, org: str) -> LeadStats: ...

    async def current_version(self, org: str) -> int: ...

    async def changes_since(self, org: str, since: int, *, limit: int = 1000) -> ChangesSince: ...

    async def prune_changes(self, *, now: float | None = None) -> int: ...


class DirectoryStore(Protocol):
    """The people directory: who a search can find (the local lead provider)."""

    async def count_people(self) -> int: ...

    async def add_people(self, people: Iterable[Person]) -> int:
        """Insert directory entries, keeping existing ids; returns how many were new."""

    def stream_people(
        self, query: PeopleQuery, *, limit: int, chunk_size: int
    ) -> AsyncGenerator[list[Person], None]:
        """Matching people in chunks as the database finds them."""

    async def get_person(self, person_id: str) -> Person | None: ...

    async def find_people(
        self, *, name: str | None, company: str | None, linkedin: str | None, limit: int = 5
    ) -> list[Person]: ...


class ConversationStore(Protocol):
    """Conversations, their messages, and the result sets of searches made in them."""

    async def create_conversation(self, org: str, user: str, title: str) -> Conversation: ...

    async def get_conversation(self, org: str, conversation_id: str) -> Conversation | None: ...

    async def list_conversations(
        self, org: str, user: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Conversation], str | None]: ...

    async def start_exchange(
        self, conversation: Conversation, text: str, client_message_id: str | None
    ) -> tuple[Message, Message, bool]: ...

    async def find_exchange(
        self, org: str, user: str, client_message_id: str
    ) -> tuple[str, str] | None: ...

    async def interrupt_stale_replies(self, *, started_before: str) -> int:
        """Mark replies still `streaming` that started before `started_before`
        (ISO-8601) as `interrupted` (their process died); returns how many."""

    async def save_reply(
        self,
        message_id: str,
        *,
        text: str,
        tool_calls: list[dict[str, Any]],
        status: str,
        usage: dict[str, Any] | None = None,
    ) -> None: ...

    async def get_message(self, org: str, message_id: str) -> Message | None: ...

    async def list_messages(
        self, org: str, conversation_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Message], str | None]: ...

    async def recent_messages(
        self, org: str, conversation_id: str, limit: int
    ) -> list[Message]: ...

    # search result sets (what a search found, for the chat to refer to)
    async def save_search(
        self,
        org: str,
        user: str,
        conversation_id: str | None,
        query: dict[str, Any],
        people: list[Person],
        *,
        search_id: str | None = None,
    ) -> SearchSet: ...

    async def get_search(self, org: str, search_id: str) -> SearchSet | None: ...


class JobStore(Protocol):
    """Export and import jobs and their progress."""

    async def create_job(self, org: str, user: str, kind: str, params: dict[str, Any]) -> Job: ...

    async def update_job(
        self,
        job_id: str,
        *,
        status: str | None = None,
        done: int | None = None,
        total: int | None = None,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None: ...

    async def get_job(self, org: str, job_id: str) -> Job | None: ...

    async def create_job_within_limit(
        self,
        org: str,
        user: str,
        kind: str,
        params: dict[str, Any],
        *,
        limit: int,
        active_since: str,
    ) -> Job | None:
        """Create a queued job unless the user already has `limit` jobs
        queued or running (updated at or after `active_since`, ISO-8601: older
        ones belong to a process that died); None then. Concurrent calls
        (from any process sharing the store) do not admit more than `limit`."""


class UsageStore(Protocol):
    """Model usage and lookup credits per org per UTC day (budgets)."""

    async def add_usage(self, org: str, day: str, *, tokens: int, cost_usd: float | None) -> None:
        """Add a reply's tokens and cost to the org's total for `day` (YYYY-MM-DD, UTC)."""

    async def usage_on(self, org: str, day: str) -> tuple[int, float]:
        """(tokens, cost in USD) the org used on `day`."""

    async def reserve_usage(
        self,
        org: str,
        day: str,
        *,
        tokens: int,
        cost_usd: float,
        max_tokens: int | None,
        max_usd: float | None,
    ) -> tuple[int, float] | None:
        """Atomically hold up to `tokens` and `cost_usd` of the org's budget for
        `day` for a reply about to run, clamped to what is left; the (tokens,
        USD) held, or None when used + held already reach `max_tokens` or
        `max_usd` (None: no limit). Shared by every instance on the store."""

    async def settle_usage(
        self,
        org: str,
        day: str,
        *,
        reserved_tokens: int,
        reserved_cost_usd: float,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float | None,
        replies: int = 1,
    ) -> None:
        """Release what `reserve_usage` held and add what `replies` replies
        used: their prompt and completion tokens (the sum counts against the
        token budget) and `cost_usd`."""

    async def reserve_credits(
        self, org: str, day: str, *, credits: int, max_credits: int | None
    ) -> int:
        """Atomically hold up to `credits` lookup credits of `day`, clamped to
        what is left of `max_credits` (None: no cap); the number held (0: none left)."""

    async def settle_credits(self, org: str, day: str, *, reserved: int, used: int) -> None:
        """Release credits held by `reserve_credits` and add the `used` ones."""

    async def usage_between(self, org: str, first_day: str, last_day: str) -> list[DayUsage]:
        """The org's usage of each day from `first_day` to `last_day`
        (YYYY-MM-DD, both included) that has any, in day order."""


class Store(LeadStore, DirectoryStore, ConversationStore, JobStore, UsageStore, Protocol):
    """Persistence of leads, their change log, the people directory,
    conversations, messages, search result sets, jobs and usage: every part.
    Code that needs one part takes that part (`LeadStore`, ...)."""

    backend: str  # "sqlite" or "mongodb"

    async def open(self) -> None:
        """Connect and create what is missing (tables, indexes); idempotent."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the database cannot answer."""
