"""REST errors: `{"error": {"code", "message", "details"}}` with a fitting status."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from leadstream.errors import LeadstreamError, field_errors, field_summary


class ApiError(LeadstreamError):
    """An error answered to the client as PROTOCOL.md's error body.

    :param status: the HTTP status of the answer.
    """

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(code, message, details)
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": self.to_wire()}


def invalid_fields(exc: ValidationError) -> ApiError:
    """A 422 naming each invalid field (the first `leadstream.errors.MAX_FIELD_ERRORS`)."""
    fields = field_errors(exc)
    return ApiError(422, "invalid_fields", field_summary(fields, whole="body"), {"fields": fields})
