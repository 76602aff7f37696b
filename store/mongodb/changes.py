"""The change log of each org's leads and its version counter.

Without transactions a failed lead write can leave a hole in the versions
(see `leads`): `changes_since` delivers changes only up to a hole, and
answers `reset` once the hole is older than `gap_grace_s`.
"""

from __future__ import annotations

import time

from leadstream.store.mongodb.connection import MongoConnection, Session
from leadstream.store.mongodb.documents import change_from_doc
from leadstream.store.records import Change, ChangesSince


class MongoChanges(MongoConnection):
    """Versions and the change log (`org_state` and `changes`)."""

    async def current_version(self, org: str) -> int:
        return await self._version(org)

    async def _version(self, org: str, session: Session = None) -> int:
        state = await self._collection("org_state").find_one(
            {"_id": org}, {"version": 1}, session=session
        )
        return state.get("version", 0) if state else 0

    async def changes_since(self, org: str, since: int, *, limit: int = 1000) -> ChangesSince:
        """Changes after version `since`, oldest first, without holes. `reset`
        is true when the log no longer reaches back to `since` (the client
        must reload): pruned, or a hole older than `gap_grace_s`."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        state = await self._collection("org_state").find_one({"_id": org}) or {}
        version = state.get("version", 0)
        if since < state.get("pruned_through", 0) or since > version:
            return ChangesSince([], version, True)
        docs = (
            await self._collection("changes")
            .find({"org": org, "version": {"$gt": since}})
            .sort("version", 1)
            .limit(limit)
            .to_list(None)
        )
        changes: list[Change] = []
        for doc in docs:
            if doc["version"] != since + len(changes) + 1:
                break  # a hole: deliver up to it
            changes.append(change_from_doc(doc))
        if changes:
            return ChangesSince(changes, changes[-1].version, False)
        if version == since:
            return ChangesSince([], version, False)
        # A hole right after `since`. Its version was reserved before the next
        # change was stamped (or before the last reservation, if none follows).
        reserved_by = docs[0]["at_epoch"] if docs else state.get("reserved_at", 0.0)
        if time.time() - reserved_by > self.gap_grace_s:
            return ChangesSince([], version, True)  # its writer failed: reload
        return ChangesSince([], since, False)  # still being written

    async def prune_changes(self, *, now: float | None = None) -> int:
        """Drop change-log entries older than the retention window."""
        cutoff = (time.time() if now is None else now) - self.changes_retention_s
        changes = self._collection("changes")
        pruned = await (
            await changes.aggregate(
                [
                    {"$match": {"at_epoch": {"$lt": cutoff}}},
                    {"$group": {"_id": "$org", "through": {"$max": "$version"}}},
                ]
            )
        ).to_list(None)
        removed = 0
        for row in pruned:
            org, through = row["_id"], row["through"]
            # Mark first: a reader never finds entries missing without the mark.
            await self._collection("org_state").update_one(
                {"_id": org}, {"$max": {"pruned_through": through}}, upsert=True
            )
            result = await changes.delete_many({"org": org, "version": {"$lte": through}})
            removed += result.deleted_count
        return removed
