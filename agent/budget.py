"""Per-org daily spending limits, kept in the store so that every instance
shares them: model tokens / USD per UTC day (`DailyBudget`), and paid lookup
credits per UTC day (`DailyCredits`).

A reply reserves part of the budget before it starts (refused with
`chat:error budget_exceeded` when nothing is left) and, however it ends,
releases the reservation and records what it used; replies that start
together cannot all spend what only one of them may. A search reserves
lookup credits a few at a time as it looks people up, and gives back what it
did not use.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from leadstream.store.base import UsageStore


def utc_day() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class BudgetExceeded(Exception):
    """The org's model budget for today is used up; `message` says which one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one reply holds of its org's budget for `day`."""

    day: str
    tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class DailyBudget:
    """Limits of one org's model usage per UTC day; None means unlimited.

    :param max_usd: cost in USD (from the price table; unpriced models cost 0).
    :param max_tokens: prompt + completion tokens.
    :param reserve_tokens: tokens a reply holds while it runs (clamped to
        what is left), so that replies starting together cannot overrun.
    """

    max_usd: float | None = None
    max_tokens: int | None = None
    reserve_tokens: int = 8000

    @property
    def limited(self) -> bool:
        return self.max_usd is not None or self.max_tokens is not None

    async def reserve(self, store: UsageStore, org: str, *, cost_usd: float) -> Reservation:
        """Hold `reserve_tokens` (and `cost_usd`, their price) for a reply.

        :raises BudgetExceeded: when the org's used and held usage reach a limit.
        """
        day = utc_day()
        if not self.limited:
            return Reservation(day)
        held = await store.reserve_usage(
            org,
            day,
            tokens=self.reserve_tokens,
            cost_usd=cost_usd,
            max_tokens=self.max_tokens,
            max_usd=self.max_usd,
        )
        if held is None:
            raise BudgetExceeded(self._used_up())
        return Reservation(day, held[0], held[1])

    async def settle(
        self,
        store: UsageStore,
        org: str,
        reservation: Reservation,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float | None,
    ) -> None:
        """Release `reservation` and record the reply and what it used
        (`GET /api/usage` shows them; the budget counts their sum)."""
        await store.settle_usage(
            org,
            reservation.day,
            reserved_tokens=reservation.tokens,
            reserved_cost_usd=reservation.cost_usd,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost_usd,
        )

    async def check_running(
        self,
        store: UsageStore,
        org: str,
        reservation: Reservation,
        tokens: int,
        cost_usd: float | None,
    ) -> None:
        """Before a running reply's next model step: the org's recorded usage
        plus this reply's so far must stay under the limits.

        :raises BudgetExceeded: when they do not.
        """
        if not self.limited:
            return
        used_tokens, used_usd = await store.usage_on(org, reservation.day)
        if self.max_tokens is not None and used_tokens + tokens >= self.max_tokens:
            raise BudgetExceeded(self._used_up())
        if self.max_usd is not None and used_usd + (cost_usd or 0.0) >= self.max_usd:
            raise BudgetExceeded(self._used_up())

    def _used_up(self) -> str:
        if self.max_tokens is not None and self.max_usd is not None:
            return f"today's budget ({self.max_tokens:,} tokens, ${self.max_usd:.2f}) is used up"
        if self.max_tokens is not None:
            return f"today's budget of {self.max_tokens:,} tokens is used up"
        return f"today's budget of ${self.max_usd:.2f} is used up"


class DailyCredits:
    """The paid lookups one search (or profile lookup) may do, drawn from its
    org's daily credits in the store a few at a time; a `LookupCredits`.

    Call `take()` before each lookup (False: none left today), `give_back()`
    when a lookup turned out not to cost a credit, and `settle()` once the
    search is over (also when it was stopped or failed): the credits held but
    not used go back, the used ones are recorded.

    :param max_credits: the org's credits per UTC day (None: no cap, only counted).
    :param chunk: credits held from the store at a time.
    """

    def __init__(
        self, store: UsageStore, org: str, max_credits: int | None, *, chunk: int = 10
    ) -> None:
        self._store = store
        self._org = org
        self._max_credits = max_credits
        self._chunk = chunk
        self._day = utc_day()
        self._held = 0
        self._lock = asyncio.Lock()  # parallel lookups of one search take in turn
        self._settled = False
        self.used = 0
        self.exhausted = False

    async def take(self) -> bool:
        async with self._lock:
            if self._max_credits is not None and self.used >= self._held:
                granted = await self._store.reserve_credits(
                    self._org, self._day, credits=self._chunk, max_credits=self._max_credits
                )
                if not granted:
                    self.exhausted = True
                    return False
                self._held += granted
            self.used += 1
            return True

    def give_back(self) -> None:
        self.used -= 1

    async def settle(self) -> None:
        if self._settled:
            return
        self._settled = True
        if self.used or self._held:
            await self._store.settle_credits(
                self._org, self._day, reserved=self._held, used=self.used
            )

    def exhausted_message(self) -> str:
        cap = f"{self._max_credits:,} " if self._max_credits is not None else ""
        return (
            f"today's {cap}lookup credits are used up (or held by searches running now); "
            "search without phone/email, or try again tomorrow"
        )
