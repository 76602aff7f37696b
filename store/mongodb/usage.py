"""Daily usage per org: model tokens and cost, provider credits, and the
reservations that keep concurrent requests within a day's limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pymongo.errors import DuplicateKeyError

from leadstream.store.errors import StoreError
from leadstream.store.mongodb.connection import MongoConnection
from leadstream.store.mongodb.documents import Doc
from leadstream.store.reservations import credits_grant, usage_grant
from leadstream.store.usage import DayUsage

T = TypeVar("T")

# Reads and conditional writes of one usage row before giving up (each lost
# race means another reservation or settlement got through).
USAGE_UPDATE_TRIES = 50


class MongoUsage(MongoConnection):
    """One `usage` document per org and day (`_id` "org|day"), written with
    `$inc` or, for reservations, with a compare-and-set on its `rev`."""

    async def add_usage(self, org: str, day: str, *, tokens: int, cost_usd: float | None) -> None:
        await self._add(org, day, {"tokens": tokens, "cost_usd": cost_usd or 0.0})

    async def usage_on(self, org: str, day: str) -> tuple[int, float]:
        doc = await self._collection("usage").find_one({"_id": f"{org}|{day}"})
        return (doc.get("tokens", 0), doc.get("cost_usd", 0.0)) if doc else (0, 0.0)

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
        def grant(doc: Doc) -> tuple[dict[str, Any], tuple[int, float] | None]:
            row = (
                doc.get("tokens", 0),
                doc.get("cost_usd", 0.0),
                doc.get("reserved_tokens", 0),
                doc.get("reserved_cost_usd", 0.0),
            )
            granted = usage_grant(row, tokens, cost_usd, max_tokens, max_usd)
            if granted is None:
                return {}, None
            return {"reserved_tokens": granted[0], "reserved_cost_usd": granted[1]}, granted

        return await self._update_usage(org, day, grant)

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
        used = {
            "tokens": prompt_tokens + completion_tokens,
            "cost_usd": cost_usd or 0.0,
            "replies": replies,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
        }

        def release(doc: Doc) -> tuple[dict[str, Any], None]:
            # Never below nothing held (SQLite's MAX(0, ...)): a repeated release frees no budget.
            held_tokens = doc.get("reserved_tokens", 0)
            held_usd = doc.get("reserved_cost_usd", 0.0)
            return {
                **used,
                "reserved_tokens": -min(reserved_tokens, held_tokens),
                "reserved_cost_usd": -min(reserved_cost_usd, held_usd),
            }, None

        await self._update_usage(org, day, release)

    async def reserve_credits(
        self, org: str, day: str, *, credits: int, max_credits: int | None
    ) -> int:
        def grant(doc: Doc) -> tuple[dict[str, Any], int]:
            row = (doc.get("credits", 0), doc.get("reserved_credits", 0))
            granted = credits_grant(row, credits, max_credits)
            return ({"reserved_credits": granted} if granted else {}), granted

        return await self._update_usage(org, day, grant)

    async def settle_credits(self, org: str, day: str, *, reserved: int, used: int) -> None:
        def release(doc: Doc) -> tuple[dict[str, Any], None]:
            held = doc.get("reserved_credits", 0)
            return {"credits": used, "reserved_credits": -min(reserved, held)}, None

        await self._update_usage(org, day, release)

    async def usage_between(self, org: str, first_day: str, last_day: str) -> list[DayUsage]:
        # The `_id` range ("org|day") walks the primary key; `org` rules out
        # another org whose name starts with this one's and a "|".
        cursor = self._collection("usage").find(
            {"_id": {"$gte": f"{org}|{first_day}", "$lte": f"{org}|{last_day}"}, "org": org},
            sort=[("_id", 1)],
        )
        return [
            DayUsage(
                doc["day"],
                replies=doc.get("replies", 0),
                prompt_tokens=doc.get("prompt_tokens", 0),
                completion_tokens=doc.get("completion_tokens", 0),
                cost_usd=doc.get("cost_usd", 0.0),
                credits=doc.get("credits", 0),
            )
            async for doc in cursor
        ]

    async def _add(self, org: str, day: str, increments: dict[str, Any]) -> None:
        """Add `increments` to the org's usage row of `day` (made if missing)."""
        await self._collection("usage").update_one(
            {"_id": f"{org}|{day}"},
            {"$inc": {**increments, "rev": 1}, "$setOnInsert": {"org": org, "day": day}},
            upsert=True,
        )

    async def _update_usage(
        self, org: str, day: str, grant: Callable[[Doc], tuple[dict[str, Any], T]]
    ) -> T:
        """Apply `grant` (the row -> its increments and the answer) to the
        org's usage row atomically without a transaction: the increments are
        written only if the row's `rev` is still the one read, else it is
        read again. Every write to the row bumps `rev`."""
        usage = self._collection("usage")
        key = f"{org}|{day}"
        for _ in range(USAGE_UPDATE_TRIES):
            doc = await usage.find_one({"_id": key})
            increments, answer = grant(doc or {})
            if not increments:
                return answer
            if doc is None:
                try:
                    await usage.insert_one(
                        {"_id": key, "org": org, "day": day, "rev": 1, **increments}
                    )
                except DuplicateKeyError:
                    continue  # made meanwhile: read it
                return answer
            written = await usage.update_one(
                {"_id": key, "rev": doc.get("rev")}, {"$inc": {**increments, "rev": 1}}
            )
            if written.matched_count:
                return answer
        raise StoreError(f"the usage of {org} kept changing; try again")
