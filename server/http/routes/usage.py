"""`GET /api/usage?from=YYYY-MM-DD&to=YYYY-MM-DD`: what the caller's org used
per UTC day (replies, prompt and completion tokens, cost, lookup credits).

Every day of the range is listed, zeros for days without use; the range is
the last 30 days (today included) unless asked otherwise, and spans at most
`LEADSTREAM_USAGE_MAX_DAYS` days.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from leadstream.server.http.appkeys import SETTINGS, STORE
from leadstream.server.http.errors import ApiError
from leadstream.server.http.middleware import principal
from leadstream.server.http.responses import json_response
from leadstream.store.usage import DayUsage, every_day

routes = web.RouteTableDef()

DEFAULT_DAYS = 30
# `date.fromisoformat` also takes "20261128" and week dates; the API takes one form.
DAY_FORMAT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True, slots=True)
class DayRange:
    """The days a usage request covers, both ends included."""

    first: date
    last: date

    @classmethod
    def from_query(cls, query: Mapping[str, str], *, today: date, max_days: int) -> DayRange:
        """The range of `from` and `to` (`to` defaults to `today`, `from` to
        the 30 days ending at `to`).

        :raises ApiError: 400 `invalid_date`, `invalid_range` (from after to)
            or `range_too_long` (over `max_days`).
        """
        last = _day(query, "to") or today
        back = min(DEFAULT_DAYS - 1, (last - date.min).days)  # never before year 1
        first = _day(query, "from") or last - timedelta(days=back)
        if first > last:
            raise ApiError(400, "invalid_range", "from must not be after to")
        days = (last - first).days + 1
        if days > max_days:
            raise ApiError(
                400,
                "range_too_long",
                f"the range spans {days:,} days; ask for at most {max_days:,} at a time",
                {"maxDays": max_days},
            )
        return cls(first, last)


def _day(query: Mapping[str, str], name: str) -> date | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        if not DAY_FORMAT.fullmatch(raw):
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_date", f"{name} must be a date as YYYY-MM-DD", {"param": name}
        ) from None


def totals(days: list[DayUsage]) -> dict[str, Any]:
    """The sums of `days`, in their wire shape."""
    total = DayUsage(
        "",
        replies=sum(d.replies for d in days),
        prompt_tokens=sum(d.prompt_tokens for d in days),
        completion_tokens=sum(d.completion_tokens for d in days),
        cost_usd=sum(d.cost_usd for d in days),
        credits=sum(d.credits for d in days),
    )
    wire = total.to_wire()
    del wire["date"]
    return wire


@routes.get("/api/usage")
async def usage(request: web.Request) -> web.Response:
    who = principal(request)
    today = datetime.now(UTC).date()
    days = DayRange.from_query(
        request.query, today=today, max_days=request.app[SETTINGS].usage_max_days
    )
    used = await request.app[STORE].usage_between(
        who.org, days.first.isoformat(), days.last.isoformat()
    )
    listed = every_day(days.first, days.last, used)
    return json_response(
        {
            "from": days.first.isoformat(),
            "to": days.last.isoformat(),
            "days": [d.to_wire() for d in listed],
            "totals": totals(listed),
        }
    )
