"""Errors the store raises for bad requests (as opposed to failures)."""


class StoreError(Exception):
    """The store cannot do what was asked (bad URL, unavailable backend)."""


class InvalidCursor(ValueError):
    """A pagination cursor that this store did not issue for this list."""
