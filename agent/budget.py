"""Per-org daily model budgets: usage is summed per org per UTC day in the
store; a turn that would start past the budget is refused with
`chat:error budget_exceeded` (the conversation stays usable tomorrow, or
after the budget is raised)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from leadstream.store.base import Store


def utc_day() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class DailyBudget:
    """Limits of one org's model usage per UTC day; None means unlimited.

    :param max_usd: cost in USD (from the price table; unpriced models cost 0).
    :param max_tokens: prompt + completion tokens.
    """

    max_usd: float | None = None
    max_tokens: int | None = None

    async def exceeded(self, store: Store, org: str) -> str | None:
        """Why the org may not start another turn today, or None."""
        if self.max_usd is None and self.max_tokens is None:
            return None
        tokens, cost = await store.usage_on(org, utc_day())
        if self.max_tokens is not None and tokens >= self.max_tokens:
            return f"today's budget of {self.max_tokens:,} tokens is used up"
        if self.max_usd is not None and cost >= self.max_usd:
            return f"today's budget of ${self.max_usd:.2f} is used up"
        return None

    async def record(self, store: Store, org: str, tokens: int, cost_usd: float | None) -> None:
        if tokens or cost_usd:
            await store.add_usage(org, utc_day(), tokens=tokens, cost_usd=cost_usd)
