"""Model usage and lookup credits per org per UTC day on SQLite
(`base.UsageStore`): one `usage` row per org per day, reserved against and
settled atomically in the writer's transactions (`store.reservations`)."""

from __future__ import annotations

import sqlite3

from leadstream.store.reservations import credits_grant, usage_grant
from leadstream.store.sqlite.database import SqliteDatabase
from leadstream.store.usage import DayUsage


class SqliteUsage:
    """The usage part of `SqliteStore` (a mixin: it uses the store's `database`)."""

    database: SqliteDatabase

    async def add_usage(self, org: str, day: str, *, tokens: int, cost_usd: float | None) -> None:
        """Add a reply's model usage to the org's total for `day` (YYYY-MM-DD, UTC)."""
        await self.database.write(
            lambda db: db.execute(
                "INSERT INTO usage (org, day, tokens, cost_usd) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (org, day) DO UPDATE SET tokens = tokens + excluded.tokens, "
                "cost_usd = cost_usd + excluded.cost_usd",
                (org, day, tokens, cost_usd or 0.0),
            )
        )

    async def usage_on(self, org: str, day: str) -> tuple[int, float]:
        """(tokens, cost in USD) the org used on `day`."""
        row = await self.database.read(
            lambda db: db.execute(
                "SELECT tokens, cost_usd FROM usage WHERE org = ? AND day = ?", (org, day)
            ).fetchone()
        )
        return (row[0], row[1]) if row else (0, 0.0)

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
        """Hold up to `tokens` / `cost_usd` of the org's budget for `day`
        (clamped to what is left); None when used + held reach a limit."""

        def reserve(db: sqlite3.Connection) -> tuple[int, float] | None:
            row = db.execute(
                "SELECT tokens, cost_usd, reserved_tokens, reserved_cost_usd FROM usage "
                "WHERE org = ? AND day = ?",
                (org, day),
            ).fetchone()
            granted = usage_grant(row or (0, 0.0, 0, 0.0), tokens, cost_usd, max_tokens, max_usd)
            if granted is not None:
                db.execute(
                    "INSERT INTO usage (org, day, reserved_tokens, reserved_cost_usd) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (org, day) DO UPDATE SET "
                    "reserved_tokens = reserved_tokens + excluded.reserved_tokens, "
                    "reserved_cost_usd = reserved_cost_usd + excluded.reserved_cost_usd",
                    (org, day, *granted),
                )
            return granted

        return await self.database.write(reserve)

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
        """Release a reservation of `reserve_usage` and add what was used."""
        tokens = prompt_tokens + completion_tokens
        used = (tokens, cost_usd or 0.0, replies, prompt_tokens, completion_tokens)
        held = (reserved_tokens, reserved_cost_usd)
        await self.database.write(
            lambda db: db.execute(
                "INSERT INTO usage (org, day, tokens, cost_usd, replies, prompt_tokens, "
                "completion_tokens) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (org, day) DO UPDATE SET tokens = tokens + excluded.tokens, "
                "cost_usd = cost_usd + excluded.cost_usd, "
                "replies = replies + excluded.replies, "
                "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
                "completion_tokens = completion_tokens + excluded.completion_tokens, "
                "reserved_tokens = MAX(0, reserved_tokens - ?), "
                "reserved_cost_usd = MAX(0.0, reserved_cost_usd - ?)",
                (org, day, *used, *held),
            )
        )

    async def reserve_credits(
        self, org: str, day: str, *, credits: int, max_credits: int | None
    ) -> int:
        """Hold up to `credits` lookup credits of `day` (clamped to what is
        left of `max_credits`); the number held, 0 when none are left."""

        def reserve(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT credits, reserved_credits FROM usage WHERE org = ? AND day = ?", (org, day)
            ).fetchone()
            granted = credits_grant(row or (0, 0), credits, max_credits)
            if granted:
                db.execute(
                    "INSERT INTO usage (org, day, reserved_credits) VALUES (?, ?, ?) "
                    "ON CONFLICT (org, day) DO UPDATE SET "
                    "reserved_credits = reserved_credits + excluded.reserved_credits",
                    (org, day, granted),
                )
            return granted

        return await self.database.write(reserve)

    async def settle_credits(self, org: str, day: str, *, reserved: int, used: int) -> None:
        """Release credits held by `reserve_credits` and add those used."""
        await self.database.write(
            lambda db: db.execute(
                "INSERT INTO usage (org, day, credits) VALUES (?, ?, ?) "
                "ON CONFLICT (org, day) DO UPDATE SET credits = credits + excluded.credits, "
                "reserved_credits = MAX(0, reserved_credits - ?)",
                (org, day, used, reserved),
            )
        )

    async def usage_between(self, org: str, first_day: str, last_day: str) -> list[DayUsage]:
        """The org's usage of each day in the range that has any, in day order."""
        rows = await self.database.read(
            lambda db: db.execute(
                "SELECT day, replies, prompt_tokens, completion_tokens, cost_usd, credits "
                "FROM usage WHERE org = ? AND day >= ? AND day <= ? ORDER BY day",
                (org, first_day, last_day),
            ).fetchall()
        )
        return [DayUsage(*row) for row in rows]
