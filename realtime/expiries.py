"""Deadlines for many connections on one timer.

A timer per connection (`loop.call_later`) costs a `TimerHandle`, its
arguments and a slot in the loop's heap for as long as the connection lives:
tens of thousands of idle sockets, each with a token that expires in an hour,
keep as many handles alive, and every full garbage collection walks them.
`ExpiryWheel` rounds deadlines up to `tick_s` slots instead; a slot is a set
of keys, and only the earliest slot has a timer.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class ExpiryWheel:
    """Calls `on_due(key)` once each key's deadline has passed, at most
    `tick_s` late, with one timer for all keys.

    :param on_due: called with each key whose deadline passed (on the loop;
        it should hand any slow work to a task).
    :param tick_s: the wheel's resolution: deadlines are rounded up to it.
    """

    def __init__(self, on_due: Callable[[str], None], *, tick_s: float = 1.0) -> None:
        self._on_due = on_due
        self.tick_s = tick_s
        self._slots: dict[int, set[str]] = {}  # slot -> keys due then
        self._slot_of: dict[str, int] = {}
        self._order: list[int] = []  # heap of slots (stale entries are skipped)
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: int | None = None

    def __len__(self) -> int:
        return len(self._slot_of)

    def add(self, key: str, deadline: float) -> None:
        """Call `on_due(key)` once `deadline` (epoch seconds) has passed; a key
        added again keeps only its latest deadline."""
        self.discard(key)
        slot = math.ceil(deadline / self.tick_s)
        keys = self._slots.get(slot)
        if keys is None:
            keys = self._slots[slot] = set()
            heapq.heappush(self._order, slot)
            if self._armed_for is None or slot < self._armed_for:
                self._arm(slot)
        keys.add(key)
        self._slot_of[key] = slot

    def discard(self, key: str) -> None:
        """Forget `key` (nothing happens if it has no deadline)."""
        slot = self._slot_of.pop(key, None)
        if slot is None:
            return
        keys = self._slots[slot]
        keys.discard(key)
        if not keys:
            del self._slots[slot]  # its heap entry is skipped when reached...
            if len(self._order) > 2 * len(self._slots) + 64:
                self._order = sorted(self._slots)  # ...or dropped here (a sorted list is a heap)

    def close(self) -> None:
        """Stop the timer and forget every deadline."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._armed_for = None
        self._slots.clear()
        self._slot_of.clear()
        self._order.clear()

    def _arm(self, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, slot * self.tick_s - time.time())
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)
        self._armed_for = slot

    def _fire(self) -> None:
        self._timer = self._armed_for = None
        now = time.time()
        due: list[str] = []
        while self._order and self._order[0] * self.tick_s <= now:
            for key in self._slots.pop(heapq.heappop(self._order), ()):
                del self._slot_of[key]
                due.append(key)
        while self._order and self._order[0] not in self._slots:
            heapq.heappop(self._order)
        if self._order:
            self._arm(self._order[0])
        for key in due:
            try:
                self._on_due(key)
            except Exception:  # one key's failure must not cost the others their turn
                log.exception("deadline of %s: its callback failed", key)
