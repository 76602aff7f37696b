"""The per-org quota of stored search rows, the same on every backend.

Every search keeps its result rows for `save_leads` and exports to refer to
(`searchId`), for a day. So that storage stays bounded and a user is never
locked out, a new search that would take its org past the quota first drops
the org's oldest stored searches; referring to a dropped one then gets the
usual unknown-or-expired answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sized


def search_rows(people: Sized) -> int:
    """What a search counts against the quota: its rows, and at least one (so
    empty searches are bounded too)."""
    return max(1, len(people))


def oldest_over_quota(stored: Iterable[tuple[str, int]], new_rows: int, quota: int) -> list[str]:
    """The ids to drop, oldest first, so that the org's stored rows plus
    `new_rows` fit in `quota`.

    :param stored: (id, rows) of the org's stored searches, oldest first.
    """
    searches = list(stored)
    excess = sum(rows for _, rows in searches) + new_rows - quota
    dropped = []
    for search_id, rows in searches:
        if excess <= 0:
            break
        dropped.append(search_id)
        excess -= rows
    return dropped
