"""Errors the store raises for bad requests (as opposed to failures)."""

from leadstream.errors import LeadstreamError


class StoreError(Exception):
    """The store cannot do what was asked (bad URL, unavailable backend)."""


class InvalidCursor(ValueError):
    """A pagination cursor that this store did not issue for this list."""


class QueryTooBroad(LeadstreamError, ValueError):
    """A search `q` that cannot be answered cheaply: too many terms, no term
    long enough, or past the time limit (`lead_search.QueryBounds`). The REST
    API answers it `400 query_too_broad`; the message says what to change."""

    code = "query_too_broad"

    def __init__(self, message: str) -> None:
        super().__init__(QueryTooBroad.code, message)
