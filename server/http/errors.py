"""REST errors: `{"error": {"code", "message", "details"}}` with a fitting status."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class ApiError(Exception):
    """An error answered to the client as PROTOCOL.md's error body."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


# A body can hold thousands of invalid items; the answer names the first few.
MAX_FIELD_ERRORS = 20


def invalid_fields(exc: ValidationError) -> ApiError:
    """A 422 naming each invalid field (the first `MAX_FIELD_ERRORS` of them)."""
    fields = [
        {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)[:MAX_FIELD_ERRORS]
    ]
    summary = "; ".join(f"{f['field'] or 'body'}: {f['message']}" for f in fields)
    return ApiError(422, "invalid_fields", summary, {"fields": fields})
