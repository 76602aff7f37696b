"""The lead changes of one atomic write, planned in memory and written by a
backend in one go.

`lead_identity.plan_upsert` (and `update_lead`, `delete_lead`) drive a
`LeadBatch`: it remembers what each lead was before the write and every
change in order. Once the backend knows the write's first version (SQLite:
inside its transaction; MongoDB: after reserving a block of versions),
`stamped()` numbers the changes and gives one `LeadRowWrite` per lead: its
state before and after the whole write, which the backend turns into an
insert, an update or a delete of the row. `stats_delta()` is what the write
does to the org's counters, `upsert_result()` what a bulk save answers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from leadstream.store.lead_identity import LeadMatcher, UpsertPlan, new_lead
from leadstream.store.records import Change, ChangeOp, Lead, LeadInput, UpsertResult, new_id

# The org's counters, as `org_state` names them (and `LeadStats` reads them).
STATS_FIELDS = ("total", "with_email", "with_phone", "with_both")


@dataclass(frozen=True, slots=True)
class LeadRowWrite:
    """What a write does to one lead's row.

    :param before: the stored lead (None: the write makes it).
    :param after: the lead as stored after the write (None: deleted).
    """

    lead_id: str
    before: Lead | None
    after: Lead | None


class LeadBatch:
    """The lead changes of one atomic write of `org` (implements
    `lead_identity.LeadWrites`, plus `delete`).

    :param org: the org written to.
    :param at: the write's time when known before planning (ISO-8601): leads
        are made with it and `stamped()` need not copy them; "" stamps every
        lead with the time given to `stamped()`.
    """

    def __init__(self, org: str, at: str = "") -> None:
        self.org = org
        self._at = at
        self.before: dict[str, Lead | None] = {}  # lead id -> stored lead (None: new)
        self.steps: list[tuple[ChangeOp, str, Lead | None]] = []
        self._stamped: dict[str, Lead | None] = {}

    def insert(self, item: LeadInput) -> Lead:
        lead = new_lead(self.org, new_id("ld"), item, self._at)
        self.before.setdefault(lead.id, None)
        self.steps.append(("insert", lead.id, lead))
        return lead

    def update(self, existing: Lead, changed: Lead) -> Lead:
        """Plan `changed` if it differs from `existing`; return what will be stored."""
        if changed == existing:
            return existing
        self.before.setdefault(existing.id, existing)
        lead = replace(changed, updated_at=self._at)
        self.steps.append(("update", lead.id, lead))
        return lead

    def delete(self, existing: Lead) -> None:
        self.before.setdefault(existing.id, existing)
        self.steps.append(("delete", existing.id, None))

    def stamped(self, first_version: int, at: str) -> tuple[list[Change], list[LeadRowWrite]]:
        """The changes numbered from `first_version` at time `at`, and the row
        writes (one per lead: its state after its last change)."""
        changes = []
        for offset, (op, lead_id, lead) in enumerate(self.steps):
            if lead is not None:
                created = at if self.before[lead_id] is None else lead.created_at
                if lead.updated_at != at or lead.created_at != created:
                    lead = replace(lead, created_at=created, updated_at=at)
            self._stamped[lead_id] = lead
            changes.append(Change(self.org, first_version + offset, op, lead_id, lead, at))
        rows = [
            LeadRowWrite(lead_id, before, self._stamped[lead_id])
            for lead_id, before in self.before.items()
            if before is not None or self._stamped[lead_id] is not None
        ]
        return changes, rows

    def final(self, lead: Lead) -> Lead | None:
        """`lead` (as planned) as stored after the write (after `stamped()`;
        None if the write deleted it)."""
        return self._stamped.get(lead.id, lead)

    def upsert_result(
        self, plan: UpsertPlan, matcher: LeadMatcher, changes: list[Change]
    ) -> UpsertResult:
        """What `upsert_leads` answers once the batch is written: the plan's
        counts, the changes, and each lead it wrote as stored (deleted: left out)."""
        leads = (self.final(matcher.current(lead_id)) for lead_id in plan.lead_ids)
        written = [lead for lead in leads if lead is not None]
        return UpsertResult(plan.saved, plan.updated, plan.unchanged, changes, written)

    def stats_delta(self) -> dict[str, int]:
        """What the write adds to the org's counters (`STATS_FIELDS`), after `stamped()`."""
        delta = dict.fromkeys(STATS_FIELDS, 0)
        for lead_id, before in self.before.items():
            for lead, sign in ((before, -1), (self._stamped.get(lead_id), +1)):
                if lead is None:
                    continue
                delta["total"] += sign
                delta["with_email"] += sign * bool(lead.emails)
                delta["with_phone"] += sign * bool(lead.phones)
                delta["with_both"] += sign * bool(lead.emails and lead.phones)
        return delta
