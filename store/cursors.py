"""Opaque keyset cursors and the sorts of lead lists, shared by every backend."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from leadstream.store.errors import InvalidCursor

# sort name -> (field, descending); ties are broken by id in the same direction
SORTS: dict[str, tuple[str, bool]] = {
    "createdAt:desc": ("created_at", True),
    "createdAt:asc": ("created_at", False),
    "name:asc": ("name_key", False),
    "name:desc": ("name_key", True),
    "company:asc": ("company_key", False),
    "company:desc": ("company_key", True),
}


# Sort keys are names, companies and timestamps: far shorter than this.
MAX_KEY_CHARS = 1024


def encode_cursor(kind: str, value: Any, last_id: str) -> str:
    """An opaque keyset cursor: the sort it belongs to and the last row's key."""
    raw = orjson.dumps([kind, value, last_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str) -> tuple[Any, str]:
    """The key of a cursor made by `encode_cursor(kind, ...)`; InvalidCursor otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise InvalidCursor("the cursor is malformed") from None
    if (
        not isinstance(decoded, list)
        or len(decoded) != 3
        or not isinstance(decoded[2], str)
        or not isinstance(decoded[1], str | int | float)
    ):
        raise InvalidCursor("the cursor is malformed")
    value = decoded[1]
    # SQLite and BSON hold 64-bit integers; a bigger one is no key of ours.
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise InvalidCursor("the cursor is malformed")
    if isinstance(value, str) and len(value) > MAX_KEY_CHARS:
        raise InvalidCursor("the cursor is malformed")
    if decoded[0] != kind:
        raise InvalidCursor("the cursor belongs to another sort or list")
    return decoded[1], decoded[2]
