"""Acknowledgements of client events: `{ok: true, ...}` or `{ok: false, error}`.

`acknowledged` wraps an event handler so that bad input becomes an error ack
and an unexpected failure is logged and answered, never a dropped connection:
one bad client never hurts another.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from leadstream.errors import LeadstreamError, field_errors, field_summary
from leadstream.realtime.limits import ConnectionLimits
from leadstream.server.logs import connection_context

if TYPE_CHECKING:
    from leadstream.server.metrics import Metrics
    from leadstream.server.ratelimit import RateLimiter

log = logging.getLogger(__name__)
Handler = Callable[[str, Any], Awaitable[dict[str, Any]]]


class EventError(LeadstreamError):
    """A refusal with a code from PROTOCOL.md (`not_found`, `text_too_long`, ...)."""


def failure(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


class EventGate:
    """What every client event passes before its handler: the token's expiry,
    the connection's own event rate, the org's tiered per-user limits (shared
    by every instance with Redis), and the events-in metric.

    :param session_of: the connection's session (`org`, `user`, `ip`, `expires_at`).
    :param limiter: tiered rate limits [none].
    :param metrics: counters [none].
    :param on_expired: called with the sid of a connection whose token has
        expired, after its `unauthorized` ack is decided (to disconnect it) [none].
    """

    def __init__(
        self,
        limits: ConnectionLimits,
        session_of: Callable[[str], Awaitable[dict[str, Any]]],
        *,
        limiter: RateLimiter | None = None,
        metrics: Metrics | None = None,
        on_expired: Callable[[str], None] | None = None,
    ) -> None:
        self.limits = limits
        self._session_of = session_of
        self._limiter = limiter
        self._metrics = metrics
        self._on_expired = on_expired

    async def refusal(self, sid: str, event: str) -> dict[str, Any] | None:
        """An error ack when the event may not run now, else None."""
        if self._metrics is not None:
            self._metrics.event_in(event)
        try:
            session = await self._session_of(sid)
        except KeyError:  # disconnected while the event was on its way
            return failure("unauthorized", "this connection is closed; connect again")
        if session.get("expires_at", math.inf) <= time.time():
            if self._on_expired is not None:
                self._on_expired(sid)
            return failure("unauthorized", "the token has expired; connect with a new token")
        if not self.limits.allow_event(sid):
            return failure("rate_limited", "too many events on this connection; slow down")
        if self._limiter is not None and self._limiter.enabled:
            decision = await self._limiter.check_event(
                session["org"], session["user"], session.get("ip")
            )
            if not decision.allowed:
                return failure("rate_limited", decision.message)
        return None


def acknowledged(event: str, handler: Handler, gate: EventGate) -> Handler:
    @functools.wraps(handler)
    async def wrapper(sid: str, data: Any = None) -> dict[str, Any]:
        with connection_context(sid):
            return await _answer(sid, data)

    async def _answer(sid: str, data: Any) -> dict[str, Any]:
        refusal = await gate.refusal(sid, event)
        if refusal is not None:
            return refusal
        if data is None:
            data = {}
        if not isinstance(data, dict):
            return failure("invalid_payload", f"{event} takes a JSON object")
        try:
            return await handler(sid, data)
        except ValidationError as exc:
            return failure("invalid_payload", field_summary(field_errors(exc), whole="payload"))
        except EventError as exc:
            return failure(exc.code, exc.message)
        except Exception:
            log.exception("%s failed for %s", event, sid)
            return failure("internal_error", "the server failed to handle this event")

    return wrapper
