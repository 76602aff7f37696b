"""What an org used per UTC day: the record `Store.usage_between` answers
with, and `every_day`, which fills in the days without usage for the REST route.

The store keeps one usage row per org per day (budgets reserve and settle
against it, see `store/reservations.py`); a day without a row used nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any


@dataclass(frozen=True, slots=True)
class DayUsage:
    """One org's use of one UTC day (`day` as YYYY-MM-DD).

    :param replies: assistant replies that ran (refused ones do not count).
    :param prompt_tokens: prompt tokens those replies used.
    :param completion_tokens: completion tokens those replies used.
    :param cost_usd: their cost from the price table (unpriced models cost 0).
    :param credits: paid lookup credits (RocketReach) searches used.
    """

    day: str
    replies: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    credits: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "date": self.day,
            "replies": self.replies,
            "promptTokens": self.prompt_tokens,
            "completionTokens": self.completion_tokens,
            "costUsd": round(self.cost_usd, 6),
            "credits": self.credits,
        }


def every_day(first: date, last: date, used: Iterable[DayUsage]) -> list[DayUsage]:
    """`used` (days with a row) completed with a zero `DayUsage` for each
    other day from `first` to `last` (both included), in day order."""
    by_day = {usage.day: usage for usage in used}
    days = ((first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1))
    return [by_day.get(day) or DayUsage(day) for day in days]
