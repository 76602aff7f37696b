"""Acknowledgements of client events: `{ok: true, ...}` or `{ok: false, error}`.

`acknowledged` wraps an event handler so that bad input becomes an error ack
and an unexpected failure is logged and answered, never a dropped connection:
one bad client never hurts another.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from leadstream.realtime.limits import ConnectionLimits

log = logging.getLogger(__name__)
Handler = Callable[[str, Any], Awaitable[dict[str, Any]]]


class EventError(Exception):
    """A refusal with a code from PROTOCOL.md (`not_found`, `text_too_long`, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def failure(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def acknowledged(event: str, handler: Handler, limits: ConnectionLimits) -> Handler:
    @functools.wraps(handler)
    async def wrapper(sid: str, data: Any = None) -> dict[str, Any]:
        if not limits.allow_event(sid):
            return failure("rate_limited", "too many events; slow down")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            return failure("invalid_payload", f"{event} takes a JSON object")
        try:
            return await handler(sid, data)
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: {err['msg']}"
                for err in exc.errors()
            )
            return failure("invalid_payload", reasons)
        except EventError as exc:
            return failure(exc.code, exc.message)
        except Exception:
            log.exception("%s failed for %s", event, sid)
            return failure("internal_error", "the server failed to handle this event")

    return wrapper
