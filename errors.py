"""The one error shape of Leadstream: a machine-readable `code` and a plain
`message` (and sometimes `details`), whichever layer raises it.

Every refusal a user or a model reads subclasses `LeadstreamError`: REST
errors (`ApiError`), Socket.IO error acks (`EventError`), tool errors
(`ToolError`), provider refusals (`ProviderError`), jobs that fail or are
refused (`JobFailed`, `JobRefused`), bad tokens (`AuthError`) and queries
too broad to run (`QueryTooBroad`). Each layer turns it into its own wire
shape (`{"error": {code, message, details}}`, `{ok: false, error}`, a job's
`error`) from these three attributes.

`field_errors` is the one way a pydantic validation error becomes messages.

This module is a leaf: it imports nothing of ours, so every layer may use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

# A body can hold thousands of invalid items; an answer names the first few.
MAX_FIELD_ERRORS = 20


class LeadstreamError(Exception):
    """A refusal or failure that its reader can act on.

    :param code: machine-readable, as PROTOCOL.md lists them (`not_found`,
        `too_many_jobs`, `invalid_fields`, ...).
    :param message: plain words for the user (or the model); never an
        exception's text. It is also the exception's `str()`.
    :param details: extra fields for the error body [none].
    """

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_wire(self) -> dict[str, Any]:
        """`{"code", "message"}`, and `"details"` when there are any."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return error


def field_errors(exc: ValidationError, *, limit: int = MAX_FIELD_ERRORS) -> list[dict[str, str]]:
    """The invalid fields of a pydantic validation error, the first `limit`
    of them: `[{"field": "emails.0", "message": "..."}]` (`field` is empty
    when the whole value is wrong)."""
    return [
        {"field": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False)[:limit]
    ]


def field_summary(fields: list[dict[str, str]], *, whole: str) -> str:
    """`field_errors` as one line: `title: too long; emails.0: not an email`,
    naming `whole` (`body`, `payload`, `arguments`) where no field is named."""
    return "; ".join(f"{field['field'] or whole}: {field['message']}" for field in fields)
